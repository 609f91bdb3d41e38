//! Turning what a participant typed or clicked into a typed, validated answer.
//!
//! Each question type has a parser that is forgiving about form (spaces, case,
//! accents, thousands separators, "next friday"-free but common date forms) and strict
//! about meaning. A rejection carries a reason the engine turns into a re-ask message.

use jiff::civil::Date;
use unicode_normalization::UnicodeNormalization;

/// Why an answer was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    Empty,
    TooShort(u32),
    TooLong(u32),
    Pattern,
    NotANumber,
    NotInteger,
    Below(f64),
    Above(f64),
    Step(f64),
    Email,
    Phone,
    Url,
    Date,
    DateBefore(Date),
    DateAfter(Date),
    RangeOrder,
    NoMatch,
    NoMatchMultiple,
    TooFewPicks(u32),
    TooManyPicks(u32),
    Rating(u32, u32),
    YesNo,
    Unticked,
}

impl Invalid {
    /// Stable code for analytics and the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Empty => "empty",
            Invalid::TooShort(_) => "too_short",
            Invalid::TooLong(_) => "too_long",
            Invalid::Pattern => "pattern",
            Invalid::NotANumber => "not_a_number",
            Invalid::NotInteger => "not_integer",
            Invalid::Below(_) => "below_min",
            Invalid::Above(_) => "above_max",
            Invalid::Step(_) => "step",
            Invalid::Email => "email",
            Invalid::Phone => "phone",
            Invalid::Url => "url",
            Invalid::Date => "date",
            Invalid::DateBefore(_) => "date_before_min",
            Invalid::DateAfter(_) => "date_after_max",
            Invalid::RangeOrder => "range_order",
            Invalid::NoMatch | Invalid::NoMatchMultiple => "no_match",
            Invalid::TooFewPicks(_) => "too_few_picks",
            Invalid::TooManyPicks(_) => "too_many_picks",
            Invalid::Rating(..) => "rating",
            Invalid::YesNo => "yes_no",
            Invalid::Unticked => "unticked",
        }
    }

    /// The default re-ask message, used when the author gives none.
    pub fn message(&self) -> String {
        match self {
            Invalid::Empty => "Please type an answer.".into(),
            Invalid::TooShort(n) => format!("Please write at least {n} characters."),
            Invalid::TooLong(n) => format!("Please keep it under {n} characters."),
            Invalid::Pattern => "That doesn't look right. Please check it and try again.".into(),
            Invalid::NotANumber => "Please enter a number.".into(),
            Invalid::NotInteger => "Please enter a whole number.".into(),
            Invalid::Below(m) => format!("Please enter a number of at least {}.", fmt_num(*m)),
            Invalid::Above(m) => format!("Please enter a number no larger than {}.", fmt_num(*m)),
            Invalid::Step(s) => format!("Please enter a multiple of {}.", fmt_num(*s)),
            Invalid::Email => "Please enter a valid email address, like name@example.com.".into(),
            Invalid::Phone => {
                "Please enter a valid phone number with its country code, like +1 415 555 0132."
                    .into()
            }
            Invalid::Url => "Please enter a valid web address, like https://example.com.".into(),
            Invalid::Date => "Please enter a date, like 2026-12-31.".into(),
            Invalid::DateBefore(d) => format!("Please choose a date on or after {d}."),
            Invalid::DateAfter(d) => format!("Please choose a date on or before {d}."),
            Invalid::RangeOrder => "The end date must be on or after the start date.".into(),
            Invalid::NoMatch => "Please choose one of the options.".into(),
            Invalid::NoMatchMultiple => "Please choose one or more of the options.".into(),
            Invalid::TooFewPicks(n) => format!("Please choose at least {n}."),
            Invalid::TooManyPicks(n) => format!("Please choose at most {n}."),
            Invalid::Rating(lo, hi) => format!("Please answer with a number from {lo} to {hi}."),
            Invalid::YesNo => "Please answer yes or no.".into(),
            Invalid::Unticked => "Please tick every item to continue.".into(),
        }
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Lowercase, accents removed, whitespace collapsed, surrounding punctuation trimmed.
pub fn normalize(s: &str) -> String {
    let folded: String = s
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let words: Vec<&str> = folded
        .split(|c: char| c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    joined
        .trim_matches(|c: char| c.is_ascii_punctuation() && c != '+' && c != '-' && c != '#')
        .trim()
        .to_string()
}

/// Parses a number as people type it: `1,234.5`, `1.234,5` (decimal comma locales),
/// `1 000`, `€ 250`, `50k`, `2.5m`, `15%`.
pub fn parse_number(input: &str, decimal_comma: bool) -> Option<f64> {
    let plain = input.trim();
    // Fast path: plain digits with an optional sign and decimal point.
    if !plain.is_empty()
        && plain
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
        && !(decimal_comma && plain.contains('.'))
        && let Ok(x) = plain.parse::<f64>()
    {
        return x.is_finite().then_some(x);
    }
    let s: String = input
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '\'' && *c != '\u{202f}')
        .collect();
    let mut t = s.trim_matches(['€', '$', '£', '¥', '₹', '%']);
    if t.bytes().any(|b| b.is_ascii_alphabetic()) {
        for code in ["CHF", "USD", "EUR", "GBP"] {
            t = t.trim_start_matches(code).trim_end_matches(code);
        }
        t = t.trim_matches(['€', '$', '£', '¥', '₹', '%']);
    }
    let mut s = t.to_string();
    let mut mult = 1.0;
    if let Some(last) = s.chars().last() {
        match last.to_ascii_lowercase() {
            'k' => mult = 1_000.0,
            'm' => mult = 1_000_000.0,
            _ => {}
        }
        if mult != 1.0 {
            s.pop();
        }
    }
    if s.is_empty() {
        return None;
    }
    let (commas, dots) = (s.matches(',').count(), s.matches('.').count());
    let normalized = if commas > 0 && dots > 0 {
        // The last separator is the decimal point.
        if s.rfind(',') > s.rfind('.') {
            s.replace('.', "").replace(',', ".")
        } else {
            s.replace(',', "")
        }
    } else if commas > 0 {
        let after = s.len() - s.rfind(',').expect("has comma") - 1;
        if commas == 1 && (decimal_comma || after != 3) {
            s.replace(',', ".")
        } else {
            s.replace(',', "")
        }
    } else if dots > 1
        || (dots == 1 && decimal_comma && s.len() - s.rfind('.').expect("has dot") - 1 == 3)
    {
        s.replace('.', "")
    } else {
        s
    };
    if !normalized
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
    {
        return None;
    }
    let x: f64 = normalized.parse().ok()?;
    let x = x * mult;
    x.is_finite().then_some(x)
}

/// Locales that write `1,5` for one and a half.
pub fn uses_decimal_comma(locale: Option<&str>) -> bool {
    let Some(l) = locale else { return false };
    let lang = l
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        lang.as_str(),
        "de" | "fr"
            | "nl"
            | "es"
            | "it"
            | "pt"
            | "da"
            | "sv"
            | "nb"
            | "no"
            | "fi"
            | "pl"
            | "cs"
            | "ru"
            | "tr"
            | "id"
            | "ro"
            | "hu"
            | "el"
            | "uk"
            | "sk"
            | "sl"
            | "hr"
            | "bg"
            | "lt"
            | "lv"
            | "et"
    )
}

/// Validates and normalises an email address (domain lowercased).
pub fn parse_email(input: &str) -> Option<String> {
    let s = input.trim().trim_start_matches("mailto:");
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return None;
    }
    if !local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
    {
        return None;
    }
    let domain = domain.to_lowercase();
    valid_host(&domain, true).then(|| format!("{local}@{domain}"))
}

fn valid_host(host: &str, need_dot: bool) -> bool {
    if host.is_empty() || host.len() > 253 || (need_dot && !host.contains('.')) {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    }) && (!need_dot || (tld.len() >= 2 && tld.chars().all(|c| c.is_alphabetic() || c == '-')))
}

/// Validates a web address; `example.com/x` becomes `https://example.com/x`.
pub fn parse_url(input: &str) -> Option<String> {
    let s = input.trim();
    if s.is_empty() || s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let (scheme, rest) = if let Some(r) = lower.strip_prefix("https://") {
        ("https", &s[s.len() - r.len()..])
    } else if let Some(r) = lower.strip_prefix("http://") {
        ("http", &s[s.len() - r.len()..])
    } else if lower.contains("://") {
        return None;
    } else {
        ("https", s)
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return None;
    }
    let host = host.to_lowercase();
    if !(valid_host(&host, true) || host == "localhost") {
        return None;
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{scheme}://{host}{port}{tail}"))
}

/// Normalises a phone number to E.164 (`+31612345678`). Numbers without an
/// international prefix take `country`'s calling code, dropping a national trunk `0`.
pub fn parse_phone(input: &str, country: Option<&str>) -> Option<String> {
    let s = input.trim();
    if s.is_empty() || s.len() > 40 {
        return None;
    }
    let mut digits = String::new();
    let mut plus = false;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return None,
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits
        .strip_prefix("011")
        .filter(|_| country.is_some_and(|c| ["US", "CA"].contains(&c)))
    {
        rest.to_string()
    } else {
        let code = calling_code(country?)?;
        let national = if code == "39" {
            digits.as_str()
        } else {
            digits.trim_start_matches('0')
        };
        if code == "1" && national.len() == 11 && national.starts_with('1') {
            national.to_string()
        } else {
            format!("{code}{national}")
        }
    };
    let len = international.len();
    if !(8..=15).contains(&len) || international.starts_with('0') {
        return None;
    }
    Some(format!("+{international}"))
}

/// International calling code of an ISO 3166 alpha-2 country.
pub fn calling_code(country: &str) -> Option<&'static str> {
    let c = country.trim().to_ascii_uppercase();
    CALLING_CODES.split(' ').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == c)
            .map(|(_, v)| v)
    })
}

const CALLING_CODES: &str = "US=1 CA=1 PR=1 GB=44 IE=353 NL=31 BE=32 LU=352 FR=33 DE=49 AT=43 CH=41 \
LI=423 IT=39 SM=378 VA=39 ES=34 PT=351 AD=376 MC=377 DK=45 SE=46 NO=47 FI=358 IS=354 EE=372 LV=371 \
LT=370 PL=48 CZ=420 SK=421 HU=36 SI=386 HR=385 BA=387 RS=381 ME=382 MK=389 AL=355 GR=30 CY=357 \
MT=356 BG=359 RO=40 MD=373 UA=380 BY=375 RU=7 KZ=7 TR=90 GE=995 AM=374 AZ=994 IL=972 PS=970 \
JO=962 LB=961 SY=963 IQ=964 IR=98 SA=966 AE=971 QA=974 KW=965 BH=973 OM=968 YE=967 EG=20 MA=212 \
DZ=213 TN=216 LY=218 SD=249 ET=251 KE=254 TZ=255 UG=256 RW=250 NG=234 GH=233 CI=225 SN=221 \
CM=237 ZA=27 ZW=263 ZM=260 MZ=258 AO=244 NA=264 BW=267 MU=230 IN=91 PK=92 BD=880 LK=94 NP=977 \
CN=86 HK=852 MO=853 TW=886 JP=81 KR=82 MN=976 VN=84 TH=66 MY=60 SG=65 ID=62 PH=63 KH=855 LA=856 \
MM=95 AU=61 NZ=64 FJ=679 PG=675 MX=52 GT=502 SV=503 HN=504 NI=505 CR=506 PA=507 CU=53 DO=1 JM=1 \
TT=1 BS=1 BB=1 HT=509 CO=57 VE=58 EC=593 PE=51 BO=591 PY=595 UY=598 AR=54 CL=56 BR=55 GY=592 \
SR=597 AF=93 UZ=998 TM=993 KG=996 TJ=992";

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Parses a date as people write it: `2026-12-31`, `31/12/2026` (or `12/31/2026` for US
/// English), `31.12.2026`, `31 December 2026`, `December 31, 2026`, `today`,
/// `tomorrow`, `yesterday`, `in 3 days`, `in 2 weeks`.
pub fn parse_date(input: &str, today: Date, month_first: bool) -> Option<Date> {
    let s = normalize(input);
    match s.as_str() {
        "today" => return Some(today),
        "tomorrow" => return today.tomorrow().ok(),
        "yesterday" => return today.yesterday().ok(),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("in ") {
        let mut parts = rest.split(' ');
        let n: i64 = parts.next()?.parse().ok()?;
        let unit = parts.next()?;
        if parts.next().is_some() || !(0..=3650).contains(&n) {
            return None;
        }
        let span = match unit.trim_end_matches('s') {
            "day" => jiff::Span::new().try_days(n).ok()?,
            "week" => jiff::Span::new().try_weeks(n).ok()?,
            "month" => jiff::Span::new().try_months(n).ok()?,
            _ => return None,
        };
        return today.checked_add(span).ok();
    }
    if let Ok(d) = s.parse::<Date>() {
        return Some(d);
    }
    // Numeric with / . or - separators.
    let nums: Vec<&str> = s.split(['/', '.', '-']).collect();
    if nums.len() == 3
        && nums
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        let n: Vec<i32> = nums.iter().map(|p| p.parse().unwrap_or(0)).collect();
        let (y, m, d) = if nums[0].len() == 4 {
            (n[0], n[1], n[2])
        } else if month_first {
            (n[2], n[0], n[1])
        } else {
            (n[2], n[1], n[0])
        };
        let y = if nums[2].len() == 2 && nums[0].len() != 4 {
            2000 + y
        } else {
            y
        };
        return Date::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
        )
        .ok();
    }
    // Month names: "31 december 2026", "december 31 2026"; without a year, the next
    // occurrence from today ("15 june").
    let mut words: Vec<&str> = s.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let this_year = today.year().to_string();
    let next_year = (today.year() + 1).to_string();
    if words.len() == 2 {
        words.push(&this_year);
        if let Some(d) = parse_date(&words.join(" "), today, month_first) {
            if d >= today {
                return Some(d);
            }
            words[2] = &next_year;
            return parse_date(&words.join(" "), today, month_first);
        }
        return None;
    }
    if words.len() == 3 {
        let month = |w: &str| {
            MONTHS
                .iter()
                .position(|m| w.len() >= 3 && m.starts_with(w))
                .map(|i| i as i8 + 1)
        };
        let day = |w: &str| {
            w.trim_end_matches(|c: char| c.is_alphabetic())
                .parse::<i8>()
                .ok()
        };
        let year: i16 = words[2].parse().ok()?;
        if let (Some(d), Some(m)) = (day(words[0]), month(words[1])) {
            return Date::new(year, m, d).ok();
        }
        if let (Some(m), Some(d)) = (month(words[0]), day(words[1])) {
            return Date::new(year, m, d).ok();
        }
    }
    None
}

/// True when dates in this locale are written month first (US English).
pub fn month_first(locale: Option<&str>) -> bool {
    locale.is_some_and(|l| {
        let l = l.to_ascii_lowercase().replace('_', "-");
        l == "en-us" || l.ends_with("-us") && l.starts_with("en") || l == "en-ph"
    })
}

/// Splits a typed date range: `2026-12-01 to 2026-12-05`, `1/12/2026 - 5/12/2026`.
pub fn split_range(input: &str) -> Option<(&str, &str)> {
    for sep in [" to ", " until ", " - ", " – ", "–", " — ", " and "] {
        if let Some((a, b)) = input.split_once(sep) {
            return Some((a.trim(), b.trim()));
        }
    }
    None
}

/// Reads yes or no in common forms and a few languages: "yes please", "nope, it's
/// tiny" and "no thanks" work (the first word decides when the whole text does not).
pub fn parse_yes_no(input: &str) -> Option<bool> {
    const YES: &[&str] = &[
        "yes",
        "y",
        "yeah",
        "yea",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "of course",
        "absolutely",
        "definitely",
        "certainly",
        "true",
        "correct",
        "right",
        "si",
        "ja",
        "oui",
        "da",
        "sim",
        "👍",
    ];
    const NO: &[&str] = &[
        "no",
        "n",
        "nope",
        "nah",
        "not really",
        "no thanks",
        "false",
        "never",
        "nee",
        "non",
        "nein",
        "nao",
        "👎",
    ];
    let s = normalize(input);
    let decide = |t: &str| {
        if YES.contains(&t) {
            Some(true)
        } else if NO.contains(&t) {
            Some(false)
        } else {
            None
        }
    };
    if let Some(b) = decide(&s) {
        return Some(b);
    }
    // "yes please", "nope, it's tiny", "no way": the first word, when it is a clear one.
    let first = s
        .split(|c: char| c.is_whitespace() || c == ',' || c == '!' || c == '.')
        .next()?;
    if first.chars().count() >= 2 {
        decide(first)
    } else {
        None
    }
}

/// Reads a rating: `4`, `4/5`, `4 stars`, `★★★★`.
pub fn parse_rating(input: &str) -> Option<i64> {
    let s = input.trim();
    let stars = s.chars().filter(|c| *c == '★' || *c == '⭐').count();
    if stars > 0
        && s.chars()
            .all(|c| c == '★' || c == '⭐' || c == '☆' || c.is_whitespace() || c == '\u{fe0f}')
    {
        return Some(stars as i64);
    }
    let n = normalize(s);
    let head = n.split(['/', ' ']).next()?;
    head.parse::<i64>().ok()
}

/// One choice the participant can see.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub value: String,
    pub label: String,
    pub synonyms: Vec<String>,
    /// What is saved when this option is picked, when not the text `value`.
    pub typed: Option<serde_json::Value>,
}

/// Matches typed text to one option: exact label/value/synonym (normalised), then a
/// 1-based number, then a unique option whose label appears as whole words.
pub fn match_choice(input: &str, options: &[Candidate]) -> Option<usize> {
    let n = normalize(input);
    if n.is_empty() {
        return None;
    }
    let exact = |o: &Candidate| {
        normalize(&o.label) == n || normalize(&o.value) == n || o.synonyms.contains(&n)
    };
    if let Some(i) = options.iter().position(exact) {
        return Some(i);
    }
    if let Some(k) = ordinal(&n, options.len()) {
        return Some(k);
    }
    let words = format!(" {} ", n.replace(|c: char| c.is_ascii_punctuation(), " "));
    let contains = |needle: &str| !needle.is_empty() && words.contains(&format!(" {needle} "));
    let hits: Vec<usize> = options
        .iter()
        .enumerate()
        .filter(|(_, o)| contains(&normalize(&o.label)) || o.synonyms.iter().any(|s| contains(s)))
        .map(|(i, _)| i)
        .collect();
    if hits.len() == 1 {
        return Some(hits[0]);
    }
    // The typed words appear in exactly one label ("beans" for "Beans ×1").
    if n.chars().count() >= 3 {
        let needle = format!(
            " {} ",
            n.replace(|c: char| c.is_ascii_punctuation(), " ").trim()
        );
        let hits: Vec<usize> = options
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                format!(
                    " {} ",
                    normalize(&o.label).replace(|c: char| c.is_ascii_punctuation(), " ")
                )
                .contains(&needle)
            })
            .map(|(i, _)| i)
            .collect();
        if hits.len() == 1 {
            return Some(hits[0]);
        }
    }
    None
}

/// `2`, `2nd`, `second`, `the second one`, `option 2`, `last` → a 0-based index.
fn ordinal(n: &str, len: usize) -> Option<usize> {
    const WORDS: [&str; 10] = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth",
    ];
    let core = n
        .trim_start_matches("the ")
        .trim_start_matches("option ")
        .trim_start_matches("number ")
        .trim_end_matches(" one")
        .trim_end_matches(" option")
        .trim();
    let k = if core == "last" {
        len
    } else if let Some(i) = WORDS.iter().position(|w| *w == core) {
        i + 1
    } else {
        let digits = core.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = &core[digits.len()..];
        if !(suffix.is_empty() || ["st", "nd", "rd", "th"].contains(&suffix)) {
            return None;
        }
        digits.parse().ok()?
    };
    (1..=len).contains(&k).then(|| k - 1)
}

/// Matches typed text to several options: split on commas, `;`, ` and `, `&`.
pub fn match_choices(input: &str, options: &[Candidate]) -> Option<Vec<usize>> {
    let lowered = input.to_lowercase();
    if let Some(i) = match_choice(input, options) {
        return Some(vec![i]);
    }
    let mut picked = Vec::new();
    for part in lowered
        .split([',', ';', '&', '+'])
        .flat_map(|p| p.split(" and "))
    {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let i = match_choice(part, options)?;
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    (!picked.is_empty()).then_some(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(labels: &[&str]) -> Vec<Candidate> {
        labels
            .iter()
            .map(|l| Candidate {
                value: l.to_lowercase(),
                label: l.to_string(),
                synonyms: Vec::new(),
                typed: None,
            })
            .collect()
    }

    #[test]
    fn numbers_in_many_spellings() {
        assert_eq!(parse_number("1,234.50", false), Some(1234.5));
        assert_eq!(parse_number("1.234,50", true), Some(1234.5));
        assert_eq!(parse_number("1,5", false), Some(1.5));
        assert_eq!(parse_number("1,5", true), Some(1.5));
        assert_eq!(parse_number("1,000", false), Some(1000.0));
        assert_eq!(parse_number("€ 250", false), Some(250.0));
        assert_eq!(parse_number("50k", false), Some(50000.0));
        assert_eq!(parse_number("-3", false), Some(-3.0));
        assert_eq!(parse_number("twelve", false), None);
        assert_eq!(parse_number("1e400", false), None);
        assert_eq!(parse_number("", false), None);
    }

    #[test]
    fn emails_urls_and_phones_normalise() {
        assert_eq!(
            parse_email(" Ana@Example.COM ").as_deref(),
            Some("Ana@example.com")
        );
        assert_eq!(parse_email("ana@localhost"), None);
        assert_eq!(parse_email("a b@x.com"), None);
        assert_eq!(
            parse_url("example.com/pricing").as_deref(),
            Some("https://example.com/pricing")
        );
        assert_eq!(parse_url("javascript:alert(1)"), None);
        assert_eq!(parse_url("ftp://x.com"), None);
        assert_eq!(
            parse_phone("+31 6 1234 5678", None).as_deref(),
            Some("+31612345678")
        );
        assert_eq!(
            parse_phone("06-12345678", Some("NL")).as_deref(),
            Some("+31612345678")
        );
        assert_eq!(
            parse_phone("(415) 555-0132", Some("US")).as_deref(),
            Some("+14155550132")
        );
        assert_eq!(
            parse_phone("0044 20 7946 0958", None).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(parse_phone("06 1234", Some("NL")), None);
        assert_eq!(parse_phone("12345678", None), None);
        assert_eq!(parse_phone("call me", Some("US")), None);
    }

    #[test]
    fn dates_in_common_forms() {
        let today = Date::new(2026, 11, 21).unwrap();
        let d = |s, us| parse_date(s, today, us);
        assert_eq!(d("2026-12-31", false), Date::new(2026, 12, 31).ok());
        assert_eq!(d("31/12/2026", false), Date::new(2026, 12, 31).ok());
        assert_eq!(d("12/31/2026", true), Date::new(2026, 12, 31).ok());
        assert_eq!(d("31.12.26", false), Date::new(2026, 12, 31).ok());
        assert_eq!(d("31 December 2026", false), Date::new(2026, 12, 31).ok());
        assert_eq!(d("Dec 31, 2026", false), Date::new(2026, 12, 31).ok());
        assert_eq!(d("tomorrow", false), Date::new(2026, 11, 22).ok());
        assert_eq!(d("in 2 weeks", false), Date::new(2026, 12, 5).ok());
        assert_eq!(d("2026-02-30", false), None);
        assert_eq!(d("2028-02-29", false), Date::new(2028, 2, 29).ok());
        assert_eq!(d("soon", false), None);
        assert_eq!(d("15 June", false), Date::new(2027, 6, 15).ok());
        assert_eq!(d("December 24", false), Date::new(2026, 12, 24).ok());
    }

    #[test]
    fn typed_text_matches_buttons() {
        let opts = cands(&["Red", "Blue", "Crème brûlée"]);
        assert_eq!(match_choice("blue", &opts), Some(1));
        assert_eq!(match_choice("CREME BRULEE!", &opts), Some(2));
        assert_eq!(match_choice("2", &opts), Some(1));
        assert_eq!(match_choice("the second one", &opts), Some(1));
        assert_eq!(match_choice("2nd", &opts), Some(1));
        assert_eq!(match_choice("last", &opts), Some(2));
        assert_eq!(match_choice("4th", &opts), None);
        assert_eq!(match_choice("I'd say red", &opts), Some(0));
        assert_eq!(match_choice("red or blue", &opts), None);
        assert_eq!(match_choice("green", &opts), None);
        assert_eq!(match_choice("brulee", &opts), Some(2));
        let sized = cands(&["Mug ×2", "Beans ×1", "Red wine", "Red beer"]);
        assert_eq!(match_choice("beans", &sized), Some(1));
        assert_eq!(match_choice("red", &sized), None);
        assert_eq!(match_choices("red, blue", &opts), Some(vec![0, 1]));
        assert_eq!(match_choices("1 and 3", &opts), Some(vec![0, 2]));
    }

    #[test]
    fn yes_no_and_ratings() {
        assert_eq!(parse_yes_no("Yeah!"), Some(true));
        assert_eq!(parse_yes_no("nope"), Some(false));
        assert_eq!(parse_yes_no("maybe"), None);
        assert_eq!(parse_yes_no("yes please"), Some(true));
        assert_eq!(parse_yes_no("Nope, it's tiny"), Some(false));
        assert_eq!(parse_yes_no("not sure"), None);
        assert_eq!(parse_yes_no("n/a"), None);
        assert_eq!(parse_rating("★★★★"), Some(4));
        assert_eq!(parse_rating("4/5"), Some(4));
        assert_eq!(parse_rating("3 stars"), Some(3));
    }
}
