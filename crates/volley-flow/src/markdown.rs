//! Safe Markdown: the subset bot messages may use, rendered to HTML that cannot run code.
//!
//! Allowed: paragraphs, line breaks, **bold**, *italics*, ~~strike~~, `code`, links
//! (http, https, mailto, tel, relative paths), bullet and numbered lists, quotes.
//! Raw HTML is shown as text, images in Markdown become links, every attribute value
//! is escaped. The widget inserts only this output as HTML.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// True for URLs a link may point to.
pub fn safe_url(url: &str) -> bool {
    let u = url.trim();
    if u.starts_with('/') {
        return !u.starts_with("//");
    }
    let lower = u.to_ascii_lowercase();
    ["http://", "https://", "mailto:", "tel:"]
        .iter()
        .any(|s| lower.starts_with(s))
        && !u
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '<' || c == '>')
}

/// Text made safe to place in HTML (element content or a quoted attribute).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape(&mut out, s);
    out
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

/// Renders safe Markdown to HTML.
pub fn to_html(md: &str) -> String {
    let mut out = String::with_capacity(md.len() + md.len() / 4);
    let parser = Parser::new_ext(md, Options::ENABLE_STRIKETHROUGH);
    // Links we refused to open: their closing tag must not emit `</a>`.
    let mut link_stack: Vec<bool> = Vec::new();
    for event in parser {
        match event {
            Event::Start(tag) => match tag {
                Tag::Paragraph => out.push_str("<p>"),
                Tag::Heading { .. } => out.push_str("<p><strong>"),
                Tag::BlockQuote(_) => out.push_str("<blockquote>"),
                Tag::CodeBlock(_) => out.push_str("<pre><code>"),
                Tag::List(Some(start)) => {
                    if start == 1 {
                        out.push_str("<ol>");
                    } else {
                        out.push_str(&format!("<ol start=\"{start}\">"));
                    }
                }
                Tag::List(None) => out.push_str("<ul>"),
                Tag::Item => out.push_str("<li>"),
                Tag::Emphasis => out.push_str("<em>"),
                Tag::Strong => out.push_str("<strong>"),
                Tag::Strikethrough => out.push_str("<del>"),
                Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                    if safe_url(&dest_url) {
                        out.push_str("<a href=\"");
                        escape(&mut out, dest_url.trim());
                        out.push_str("\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">");
                        link_stack.push(true);
                    } else {
                        link_stack.push(false);
                    }
                }
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph => out.push_str("</p>"),
                TagEnd::Heading(_) => out.push_str("</strong></p>"),
                TagEnd::BlockQuote(_) => out.push_str("</blockquote>"),
                TagEnd::CodeBlock => out.push_str("</code></pre>"),
                TagEnd::List(true) => out.push_str("</ol>"),
                TagEnd::List(false) => out.push_str("</ul>"),
                TagEnd::Item => out.push_str("</li>"),
                TagEnd::Emphasis => out.push_str("</em>"),
                TagEnd::Strong => out.push_str("</strong>"),
                TagEnd::Strikethrough => out.push_str("</del>"),
                // Refused links (false on the stack) close without `</a>`.
                TagEnd::Link | TagEnd::Image if link_stack.pop() == Some(true) => {
                    out.push_str("</a>")
                }
                _ => {}
            },
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => escape(&mut out, &t),
            Event::Code(t) => {
                out.push_str("<code>");
                escape(&mut out, &t);
                out.push_str("</code>");
            }
            Event::SoftBreak | Event::HardBreak => out.push_str("<br>"),
            Event::Rule => out.push_str("<hr>"),
            _ => {}
        }
    }
    out
}

/// Renders Markdown as plain text (terminal, email subject lines, transcripts of links).
pub fn to_plain(md: &str) -> String {
    let mut out = String::new();
    let mut list: Vec<Option<u64>> = Vec::new();
    let mut link: Vec<String> = Vec::new();
    for event in Parser::new_ext(md, Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Start(Tag::List(start)) => list.push(start),
            Event::End(TagEnd::List(_)) => {
                list.pop();
                out.push('\n');
            }
            Event::Start(Tag::Paragraph) if !out.is_empty() && !out.ends_with('\n') => {
                out.push('\n')
            }
            Event::Start(Tag::Item) => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                match list.last_mut() {
                    Some(Some(n)) => {
                        out.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => out.push_str("• "),
                }
            }
            Event::Start(Tag::Link { dest_url, .. }) => link.push(dest_url.to_string()),
            Event::End(TagEnd::Link) => {
                if let Some(url) = link.pop() {
                    out.push_str(&format!(" ({url})"));
                }
            }
            Event::End(TagEnd::Paragraph) | Event::End(TagEnd::Heading(_)) => out.push('\n'),
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                out.push_str(&t)
            }
            Event::SoftBreak | Event::HardBreak => out.push('\n'),
            _ => {}
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_safe_subset() {
        assert_eq!(
            to_html("**Hi** *there*"),
            "<p><strong>Hi</strong> <em>there</em></p>"
        );
        assert_eq!(
            to_html("[docs](https://x.com)"),
            "<p><a href=\"https://x.com\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">docs</a></p>"
        );
        assert_eq!(to_html("- a\n- b"), "<ul><li>a</li><li>b</li></ul>");
    }

    #[test]
    fn nothing_executable_survives() {
        let html = to_html("<script>alert(1)</script> <img src=x onerror=alert(1)>");
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        let html = to_html("[x](javascript:alert(1)) ![y](data:text/html,hi)");
        assert!(!html.contains("href"), "{html}");
        let html = to_html("[x](https://a.com\" onclick=\"alert(1))");
        assert!(!html.contains("onclick=\""), "{html}");
    }

    #[test]
    fn plain_text_keeps_lists_and_link_targets() {
        assert_eq!(
            to_plain("Hi **Ana**\n\n1. one\n2. two"),
            "Hi Ana\n1. one\n2. two"
        );
        assert_eq!(
            to_plain("see [docs](https://x.com)"),
            "see docs (https://x.com)"
        );
        assert_eq!(to_plain("- one\n- two\n\nAfter."), "• one\n• two\nAfter.");
    }
}
