/*!
 * Volley event page (event.js) — a premiere: a pre-recorded video played to every
 * viewer at the same position, with chat, polls, offers, Q&A and flows at their
 * offsets. Speaks the protocol of docs/watching.md over a WebSocket at
 * /events/{id}/ws. Plain JavaScript, no dependencies, no build step, no requests
 * to anywhere but this server.
 *
 * The page (event.html, rendered by the server) carries the event id and the
 * `showing` query parameter as data attributes of <body>, and the label over the
 * player. The label is never hidden: this script only rewords it in replays.
 *
 * User text is always inserted as text (textContent), never as HTML.
 *
 * For tests and tools, a read-only `window.volleyEvent`:
 *   position()   the player's position, ms since the media start
 *   serverNow()  the server's clock as estimated here, ms since the Unix epoch
 *   offset()     server clock − this page's monotonic clock (ms), null before a reply
 *   startsAt()   the showing's start, ms since the Unix epoch (null before hello)
 *   phase()      "connecting", "lobby", "live", "replay" or "over"
 */
(function () {
  'use strict';
  if (typeof window === 'undefined' || typeof document === 'undefined') return;

  // ─────────────────────────────────────────────────── constants (watching.md) ──
  var PING_BURST = 8; // pings on connecting…
  var PING_GAP_MS = 200; // …this far apart,
  var PING_EVERY_MS = 10000; // then one every 10 s
  var SAMPLES_KEPT = 8; // the last 8 samples,
  var SAMPLES_USED = 3; // the mean offset of the 3 with the lowest delay
  var DRIFT_IGNORE_MS = 50; // under: nothing
  var DRIFT_SEEK_MS = 500; // over: seek; between: playback rate 1 − drift / 1 s
  var RATE_MIN = 0.9;
  var RATE_MAX = 1.1;
  var CHECK_EVERY_MS = 250;
  var PROGRESS_EVERY_MS = 5000;
  var MESSAGE_MAX = 500;
  var QUESTION_MAX = 300;
  var NAME_MAX = 40;
  var STORAGE_VIEWER = 'volley.viewer';
  var RECONNECT_MIN_MS = 500;
  var RECONNECT_MAX_MS = 15000;

  var ERRORS = {
    bad_message: 'That could not be sent.',
    too_long: 'That is too long.',
    rate_limited: 'You are sending messages too quickly. Please wait a moment.',
    slow_mode: 'Slow mode is on: please wait before sending another message.',
    muted: 'A moderator has muted you for a while.',
    banned: 'A moderator has removed you from this event’s chat.',
    closed: 'This is not open at this point of the video.',
    already: 'You have already done that.',
    not_found: 'That is no longer there.',
    forbidden: 'Only moderators can do that.',
    no_name: 'Please choose a name first.'
  };

  // ─────────────────────────────────────────────────────────────── helpers ──
  function $(id) { return document.getElementById(id); }

  /** Creates an element; `text` is always inserted as text, never as HTML. */
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  function button(cls, text, label) {
    var b = el('button', cls, text);
    b.type = 'button';
    if (label) b.setAttribute('aria-label', label);
    return b;
  }

  /** The first argument that is neither null nor undefined. */
  function first() {
    for (var i = 0; i < arguments.length; i++) {
      if (arguments[i] !== null && arguments[i] !== undefined) return arguments[i];
    }
    return null;
  }

  function isObj(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }

  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

  function chars(s) { return Array.from(String(s)).length; }

  /** Milliseconds from a number (ms), an ISO 8601 / `5m30s` duration or null. */
  function durMs(v) {
    if (v === null || v === undefined || v === '') return null;
    if (typeof v === 'number') return isFinite(v) ? v : null;
    if (isObj(v)) return durMs(first(v.ms, v.at_ms, v.secs != null ? v.secs * 1000 : null));
    var s = String(v).trim();
    if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
    var iso = /^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$/i.exec(s);
    if (iso) return ((+iso[1] || 0) * 3600 + (+iso[2] || 0) * 60 + (+iso[3] || 0)) * 1000;
    var total = 0;
    var re = /(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)/g;
    var m;
    var any = false;
    while ((m = re.exec(s))) {
      any = true;
      total += +m[1] * { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2]];
    }
    return any ? total : null;
  }

  /** Milliseconds since the epoch from a number or an RFC 3339 string. */
  function instantMs(v) {
    if (v === null || v === undefined || v === '') return null;
    if (typeof v === 'number') return v;
    var t = Date.parse(String(v));
    return isNaN(t) ? null : t;
  }

  function fmtClock(ms) {
    var t = Math.max(0, Math.floor((ms || 0) / 1000));
    var h = Math.floor(t / 3600);
    var m = Math.floor((t % 3600) / 60);
    var s = t % 60;
    var ss = (s < 10 ? '0' : '') + s;
    if (h) return h + ':' + (m < 10 ? '0' : '') + m + ':' + ss;
    return m + ':' + ss;
  }

  function fmtCountdown(ms) {
    var t = Math.max(0, Math.ceil(ms / 1000));
    var d = Math.floor(t / 86400);
    var h = Math.floor((t % 86400) / 3600);
    var m = Math.floor((t % 3600) / 60);
    var s = t % 60;
    function two(n) { return (n < 10 ? '0' : '') + n; }
    var clock = (d || h ? two(h) + ':' : '') + two(m) + ':' + two(s);
    return d ? d + (d === 1 ? ' day ' : ' days ') + clock : clock;
  }

  var ZONE = (function () {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { return ''; }
  })();

  function fmtWhen(ms) {
    try {
      return new Intl.DateTimeFormat(undefined, {
        weekday: 'long', day: 'numeric', month: 'long', year: 'numeric',
        hour: '2-digit', minute: '2-digit', timeZoneName: 'short'
      }).format(new Date(ms));
    } catch (e) { return new Date(ms).toString(); }
  }

  function fmtTime(ms) {
    try {
      return new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }).format(new Date(ms));
    } catch (e) { return ''; }
  }

  function storageGet(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }
  function storageSet(key, val) {
    try { window.localStorage.setItem(key, val); } catch (e) { /* private mode */ }
  }

  function httpUrl(u) {
    try {
      var p = new URL(String(u), location.href);
      return p.protocol === 'https:' || p.protocol === 'http:' ? p.href : null;
    } catch (e) { return null; }
  }

  function errorText(code, message) {
    var m = message == null ? '' : String(message).trim().slice(0, 300);
    if (m) return m.charAt(0).toUpperCase() + m.slice(1);
    return ERRORS[code] || 'Something went wrong.';
  }

  function humanField(name) {
    if (name === 'name') return 'Name';
    if (name === 'email') return 'Email address';
    var s = String(name).replace(/_/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  // ──────────────────────────────────────── a small, safe Markdown (host text) ──
  /** Inline Markdown (code, bold, italics, http(s) links) as DOM nodes. */
  function inlineMd(parent, s) {
    var re = /`([^`]+)`|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=\S)([^*]*?\S)\*|\b_(?=\S)([^_]*?\S)_\b|\[([^\]]+)\]\(([^)\s]+)\)/g;
    var last = 0;
    var m;
    while ((m = re.exec(s))) {
      if (m.index > last) parent.appendChild(document.createTextNode(s.slice(last, m.index)));
      if (m[1] != null) {
        parent.appendChild(el('code', null, m[1]));
      } else if (m[2] != null || m[3] != null) {
        var b = el('strong');
        inlineMd(b, first(m[2], m[3]));
        parent.appendChild(b);
      } else if (m[4] != null || m[5] != null) {
        var i = el('em');
        inlineMd(i, first(m[4], m[5]));
        parent.appendChild(i);
      } else {
        var href = httpUrl(m[7]);
        if (href) {
          var a = el('a');
          a.href = href;
          a.target = '_blank';
          a.rel = 'noopener noreferrer';
          inlineMd(a, m[6]);
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(m[6]));
        }
      }
      last = re.lastIndex;
    }
    if (last < s.length) parent.appendChild(document.createTextNode(s.slice(last)));
  }

  /** Markdown paragraphs and bullet lists; anything else is text. */
  function markdown(src) {
    var box = el('div', 'md');
    String(src == null ? '' : src).replace(/\r\n?/g, '\n').split(/\n{2,}/).forEach(function (block) {
      var lines = block.split('\n').filter(function (l) { return l.trim() !== ''; });
      if (!lines.length) return;
      var bullets = lines.every(function (l) { return /^\s*[-*+]\s+/.test(l); });
      if (bullets) {
        var ul = el('ul');
        lines.forEach(function (l) {
          var li = el('li');
          inlineMd(li, l.replace(/^\s*[-*+]\s+/, ''));
          ul.appendChild(li);
        });
        box.appendChild(ul);
        return;
      }
      var p = el('p');
      lines.forEach(function (l, i) {
        if (i) p.appendChild(el('br'));
        inlineMd(p, l.replace(/^#{1,6}\s+/, ''));
      });
      box.appendChild(p);
    });
    return box;
  }

  // ──────────────────────────────────────────────────────────────── elements ──
  var body = document.body;
  var video = $('video');
  var stage = $('stage');
  var labelEl = $('label');
  var ui = {
    lobby: $('lobby'), countdown: $('countdown'), starts: $('starts'),
    notice: $('notice'), noticeText: $('notice-text'), noticeLink: $('notice-link'),
    bigPlay: $('big-play'), unmuteHint: $('unmute-hint'), unmute: $('unmute'),
    seek: $('seek'), play: $('play'), mute: $('mute'), time: $('time'),
    liveState: $('live-state'), chapterWrap: $('chapter-wrap'), chapter: $('chapter'),
    fullscreen: $('fullscreen'), behind: $('behind'), goLive: $('go-live'),
    cues: $('cues'), flows: $('flows'),
    register: $('register'), registerForm: $('register-form'), registerFields: $('register-fields'),
    registerError: $('register-error'), registerDone: $('register-done'),
    tabChat: $('tab-chat'), tabQa: $('tab-qa'), qaOpen: $('qa-open'),
    panelChat: $('panel-chat'), panelQa: $('panel-qa'),
    modBar: $('mod-bar'), slowSelect: $('slow-select'), muteSelect: $('mute-select'),
    pinned: $('pinned'), slowNotice: $('slow-notice'), log: $('chat-log'),
    chatForm: $('chat-form'), nameStep: $('name-step'), nameInput: $('chat-name'), nameSave: $('name-save'),
    chatText: $('chat-text'), chatSend: $('chat-send'), chatError: $('chat-error'), chatStatus: $('chat-status'),
    qaForm: $('qa-form'), qaText: $('qa-text'), qaSend: $('qa-send'), qaError: $('qa-error'),
    qaStatus: $('qa-status'), qaList: $('qa-list'), conn: $('conn')
  };
  if (!video || !stage || !labelEl) return;

  var EVENT_ID = body.getAttribute('data-event') || (function () {
    var parts = location.pathname.split('/').filter(Boolean);
    try { return decodeURIComponent(parts[1] || ''); } catch (e) { return ''; }
  })();
  var SHOWING_PARAM = body.getAttribute('data-showing') || (function () {
    try { return new URLSearchParams(location.search).get('showing') || ''; } catch (e) { return ''; }
  })();

  // ─────────────────────────────────────────────────────────────────── state ──
  var S = {
    viewer: storageGet(STORAGE_VIEWER) || '',
    viewerId: null,
    name: null,
    moderator: false,
    event: null,
    showing: null,
    replayShowing: null, // a past showing in replay that is not the one joined
    startsAt: null,
    endsAt: null,
    replayUntil: null,
    onDemand: false,
    duration: 0, // ms
    phase: 'connecting',
    behind: false,
    cues: [],
    chapters: [],
    polls: {}, // id → { cue, counts, voters, mine, card }
    offers: {}, // id → { cue, card, seen }
    flows: {}, // cue index → { card, mounted }
    entries: {}, // key → chat entry
    order: [], // keys, sorted for the current mode
    rendered: [], // keys shown in the log, in order
    orderMode: null,
    pinned: null,
    slow: 0,
    mutedUntil: 0,
    banned: false,
    reports: {},
    questions: {},
    upvoted: {},
    asked: {},
    lastPos: 0,
    helloCount: 0,
    pendingText: null,
    answers: [],
    modMinutes: 10
  };

  // ──────────────────────────────────────────────────────────── the clock ──
  // Offsets relate this page's monotonic clock (performance.now) to the server's.
  var clock = { samples: [], offset: null, sent: {} };

  function localNow() { return performance.now(); }

  function serverNow() {
    return clock.offset == null ? Date.now() : localNow() + clock.offset;
  }

  function addSample(t0, t3, s) {
    var d = t3 - t0;
    if (!(d >= 0) || !isFinite(s)) return;
    clock.samples.push({ d: d, o: s - (t0 + t3) / 2 });
    if (clock.samples.length > SAMPLES_KEPT) clock.samples.shift();
    var best = clock.samples.slice().sort(function (a, b) { return a.d - b.d; }).slice(0, SAMPLES_USED);
    var sum = 0;
    best.forEach(function (x) { sum += x.o; });
    clock.offset = sum / best.length;
    clock.synced = true;
  }

  var pingTimers = [];
  function stopPings() {
    pingTimers.forEach(function (t) { clearTimeout(t); clearInterval(t); });
    pingTimers = [];
  }
  function ping() {
    var t0 = localNow();
    var c = Math.round(t0);
    clock.sent[c] = t0;
    var keys = Object.keys(clock.sent);
    if (keys.length > 32) delete clock.sent[keys[0]];
    send({ t: 'ping', c: c });
  }
  function startPings() {
    stopPings();
    for (var i = 0; i < PING_BURST; i++) pingTimers.push(setTimeout(ping, i * PING_GAP_MS));
    pingTimers.push(setTimeout(function () {
      pingTimers.push(setInterval(ping, PING_EVERY_MS));
    }, (PING_BURST - 1) * PING_GAP_MS));
  }
  function onPong(m) {
    var t3 = localNow();
    var c = Number(m.c);
    var t0 = Object.prototype.hasOwnProperty.call(clock.sent, c) ? clock.sent[c] : c;
    delete clock.sent[c];
    addSample(t0, t3, Number(m.s));
  }

  // ──────────────────────────────────────────────────────────── the socket ──
  var ws = null;
  var attempt = 0;
  var failedOpens = 0;
  var reconnectTimer = null;
  var refSeq = 0;
  var pending = {}; // ref → { ok(msg), error(msg) }

  function wsUrl() {
    var q = [];
    if (S.viewer) q.push('viewer=' + encodeURIComponent(S.viewer));
    if (SHOWING_PARAM) q.push('showing=' + encodeURIComponent(SHOWING_PARAM));
    if (ZONE) q.push('zone=' + encodeURIComponent(ZONE));
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host +
      '/events/' + encodeURIComponent(EVENT_ID) + '/ws' + (q.length ? '?' + q.join('&') : '');
  }

  function setConn(state, text) {
    ui.conn.setAttribute('data-state', state);
    ui.conn.textContent = text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    setConn('connecting', attempt ? 'Reconnecting…' : 'Connecting…');
    var sock;
    try { sock = new WebSocket(wsUrl()); } catch (e) { scheduleReconnect(); return; }
    ws = sock;
    var opened = false;
    sock.onopen = function () { opened = true; };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (isObj(m)) handle(m);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      if (!opened) failedOpens++;
      if (failedOpens === 2) explainRefusal();
      stopPings();
      Object.keys(pending).forEach(function (r) {
        var p = pending[r];
        delete pending[r];
        if (p.error) p.error({ code: 'disconnected', message: 'The connection was lost. Please try again.' });
      });
      scheduleReconnect();
    };
    sock.onerror = function () { /* onclose follows */ };
  }

  /** The server refuses a connection with plain HTTP (unknown event, a showing that
   *  cannot be watched now); a WebSocket cannot read it, the listing can. */
  function explainRefusal() {
    fetch('/api/events/' + encodeURIComponent(EVENT_ID), { credentials: 'same-origin' })
      .then(function (r) {
        var text;
        if (r.status === 404) text = 'This event does not exist.';
        else if (SHOWING_PARAM) text = 'This showing cannot be watched now: it is over, or it is not one of this event’s.';
        else text = 'There is no showing of this event to watch right now.';
        ui.notice.hidden = false;
        ui.noticeText.textContent = text;
        ui.noticeLink.hidden = !SHOWING_PARAM || r.status === 404;
        if (SHOWING_PARAM && r.status !== 404) {
          ui.noticeLink.href = location.pathname;
          ui.noticeLink.textContent = 'See the next showing';
        }
      })
      .catch(function () { /* offline: keep trying */ });
  }

  function scheduleReconnect() {
    if (S.switching) {
      S.switching = false;
      setConn('connecting', 'Switching to the replay…');
      reconnectTimer = setTimeout(connect, 100);
      return;
    }
    setConn('offline', 'Connection lost. Reconnecting…');
    var base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * Math.pow(2, attempt));
    attempt++;
    reconnectTimer = setTimeout(connect, base * (0.75 + Math.random() * 0.5));
  }

  function open() { return ws && ws.readyState === 1; }

  /** Messages about a position carry the player's own (used by the server in replays). */
  var POSITIONED = { chat: 1, vote: 1, impression: 1, click: 1, ask: 1 };

  function send(msg, handlers) {
    if (POSITIONED[msg.t] && msg.pos == null) msg.pos = Math.max(0, Math.round(position()));
    if (!open()) {
      if (handlers && handlers.error) handlers.error({ code: 'disconnected', message: 'Not connected. Reconnecting…' });
      return false;
    }
    if (handlers) {
      msg.ref = 'r' + (++refSeq);
      pending[msg.ref] = handlers;
    }
    try { ws.send(JSON.stringify(msg)); } catch (e) { return false; }
    return true;
  }

  function settle(m, ok) {
    var r = m.ref;
    if (r == null || !pending[r]) return false;
    var h = pending[r];
    delete pending[r];
    if (ok && h.ok) h.ok(m);
    if (!ok && h.error) h.error(m);
    return true;
  }

  function handle(m) {
    switch (m.t) {
      case 'hello': onHello(m); break;
      case 'pong': onPong(m); break;
      case 'chat': addMessage(m); renderChat(); break;
      case 'deleted': onDeleted(m.ids || []); break;
      case 'pinned': S.pinned = m.message || null; renderPinned(); break;
      case 'slow': S.slow = Number(m.seconds) || 0; renderSlow(); break;
      case 'poll': onPollResults(m); break;
      case 'question': upsertQuestion(m); renderQuestions(); break;
      case 'report': S.reports[m.message] = m.reports; refreshReports(m.message); break;
      case 'muted': S.mutedUntil = instantMs(m.until) || 0; renderComposer(); break;
      case 'banned': S.banned = true; renderComposer(); break;
      case 'ok': settle(m, true); break;
      case 'error':
        if (!settle(m, false)) showChatError(errorText(m.code, m.message));
        break;
      default: break;
    }
  }

  // ─────────────────────────────────────────────────────────────── hello ──
  function normCue(c, i) {
    if (!isObj(c)) return null;
    var KINDS = ['say', 'poll', 'offer', 'qa', 'flow'];
    var kind = c.kind || c.type;
    if (KINDS.indexOf(kind) < 0) kind = KINDS.filter(function (k) { return k in c; })[0];
    if (!kind) return null;
    var p = c[kind];
    var o = isObj(p) ? p : c;
    var cue = { i: i, kind: kind, at: durMs(first(c.at_ms, c.at, c.pos, o.at_ms, o.at)) || 0 };
    var end = S.duration || Infinity;
    if (kind === 'say') {
      cue.text = typeof p === 'string' ? p : first(o.text, c.text, o.message, '');
    } else if (kind === 'poll') {
      cue.id = String(first(o.id, c.id, 'poll' + i));
      cue.question = first(o.question, c.question, '');
      cue.options = (o.options || c.options || []).map(function (x) {
        return isObj(x) ? first(x.label, x.text, x.title, '') : String(x);
      });
      cue.multiple = !!first(o.multiple, c.multiple, false);
      cue.closeAt = first(durMs(first(o.close_at_ms, o.close_at, c.close_at_ms, c.close_at, c.until_ms)), end);
      cue.resultsAt = first(durMs(first(o.results_at_ms, o.results_at, c.results_at_ms, c.results_at)), cue.closeAt);
    } else if (kind === 'offer') {
      cue.id = String(first(o.id, c.id, 'offer' + i));
      cue.text = first(o.text, c.text, '');
      cue.url = httpUrl(first(o.url, c.url, ''));
      cue.until = first(durMs(first(o.until_ms, o.until, c.until_ms, c.until)), end);
    } else if (kind === 'qa') {
      cue.until = first(durMs(first(o.until_ms, o.until, c.until_ms, c.until)), end);
    } else if (kind === 'flow') {
      cue.flow = String(typeof p === 'string' ? p : first(o.flow, o.id, c.flow_id, c.id, ''));
    }
    return cue;
  }

  function onHello(h) {
    attempt = 0;
    failedOpens = 0;
    S.helloAt = localNow();
    S.helloCount++;
    setConn('connected', 'Connected');
    var local = localNow();
    var now = instantMs(h.now);
    if (now != null && !clock.synced) clock.offset = now - local;
    startPings();

    if (h.viewer && h.viewer !== S.viewer) {
      S.viewer = String(h.viewer);
      storageSet(STORAGE_VIEWER, S.viewer);
    }
    S.viewerId = first(h.viewer_id, S.viewerId);
    S.name = first(h.name, S.name);
    S.moderator = h.moderator === true;
    // Moderators post under their console name.
    if (S.moderator && !S.name) S.name = 'moderator';
    body.classList.toggle('is-moderator', S.moderator);
    ui.modBar.hidden = !S.moderator;

    var ev = isObj(h.event) ? h.event : {};
    var showingChanged = !S.showing || !h.showing || (S.showing.id !== (h.showing && h.showing.id));
    S.event = ev;
    S.duration = first(durMs(first(ev.duration_ms, ev.duration)), isFinite(video.duration) ? video.duration * 1000 : null, 0);
    var replay = isObj(h.replay) ? h.replay : null;
    var showing = isObj(h.showing) ? h.showing : replay;
    S.showing = showing;
    S.replayShowing = replay && showing && replay.id !== showing.id ? replay : null;
    if (showing) {
      S.startsAt = instantMs(showing.starts_at);
      S.endsAt = first(instantMs(showing.ends_at), S.startsAt != null ? S.startsAt + S.duration : null);
      S.replayUntil = instantMs(showing.replay_until);
      S.onDemand = showing.on_demand === true;
    }
    if (replay && showing === replay && !S.replayUntil) S.replayUntil = instantMs(replay.replay_until);

    S.cues = (Array.isArray(ev.timeline) ? ev.timeline : []).map(normCue).filter(Boolean)
      .sort(function (a, b) { return a.at - b.at || a.i - b.i; });
    S.chapters = (Array.isArray(ev.chapters) ? ev.chapters : []).map(function (c) {
      return { at: durMs(first(c.at_ms, c.at)) || 0, title: String(first(c.title, '')) };
    });
    renderChapters();

    if (ev.title) document.title = ev.title;
    var src = ev.media_url ? String(ev.media_url) : '/events/' + encodeURIComponent(EVENT_ID) + '/media';
    if (showingChanged || !video.getAttribute('src')) {
      if (video.getAttribute('src') !== src) video.setAttribute('src', src);
      S.behind = false;
      S.liveStarted = false;
    }

    // Chat, polls, questions: the current state replaces what was shown.
    S.entries = {};
    S.rendered = [];
    S.orderMode = null;
    ui.log.textContent = '';
    (Array.isArray(h.chat) ? h.chat : []).forEach(addMessage);
    S.pinned = h.pinned || null;
    S.slow = Number(h.slow) || 0;
    S.mutedUntil = instantMs(h.muted_until) || 0;
    S.banned = h.banned === true;
    S.reports = {};
    (Array.isArray(h.reports) ? h.reports : []).forEach(function (r) {
      if (isObj(r) && r.message != null) S.reports[r.message] = r.reports;
    });
    S.answers = Array.isArray(h.answers) ? h.answers.filter(isObj) : [];
    resetCues();
    (Array.isArray(h.polls) ? h.polls : isObj(h.polls) ? Object.keys(h.polls).map(function (k) {
      var v = h.polls[k];
      return isObj(v) ? Object.assign({ id: k }, v) : { id: k, counts: v };
    }) : []).forEach(onPollResults);
    S.questions = {};
    (Array.isArray(h.questions) ? h.questions : []).forEach(upsertQuestion);
    readMine(h.mine);

    if (S.name && !S.moderator) ui.nameInput.value = S.name;
    setupRegistration();
    ui.slowSelect.value = String(S.slow);
    renderPinned();
    renderSlow();
    renderComposer();
    renderQuestions();
    renderNotice();
    tick();
    renderChat(true);
  }

  function readMine(mine) {
    if (!isObj(mine)) return;
    var votes = mine.votes;
    if (Array.isArray(votes)) {
      votes.forEach(function (v) {
        if (isObj(v) && S.polls[v.poll]) S.polls[v.poll].mine = v.options || [];
      });
    } else if (isObj(votes)) {
      Object.keys(votes).forEach(function (id) { if (S.polls[id]) S.polls[id].mine = votes[id] || []; });
    }
    var qs = first(mine.questions, mine.asked, []);
    (Array.isArray(qs) ? qs : []).forEach(function (q) {
      var id = isObj(q) ? q.id : q;
      if (id != null) S.asked[id] = true;
      if (isObj(q) && q.text) { upsertQuestion(q); }
    });
    var ups = first(mine.upvotes, mine.upvoted, []);
    (Array.isArray(ups) ? ups : []).forEach(function (id) { S.upvoted[isObj(id) ? id.id : id] = true; });
  }

  // ─────────────────────────────────────────────────────── phase & player ──
  function livePos(now) {
    if (S.startsAt == null) return 0;
    return clamp((now == null ? serverNow() : now) - S.startsAt, 0, S.duration || Infinity);
  }

  function computePhase(now) {
    if (!S.showing || S.startsAt == null) return S.event ? 'over' : 'connecting';
    if (now < S.startsAt) return 'lobby';
    if (S.onDemand) return S.replayUntil == null || now < S.replayUntil ? 'replay' : 'over';
    if (now < S.endsAt) return 'live';
    if (S.replayUntil != null && now < S.replayUntil) return 'replay';
    return 'over';
  }

  function position() {
    if (S.phase === 'lobby' || S.phase === 'connecting') return 0;
    var t = video.currentTime;
    return isFinite(t) ? t * 1000 : 0;
  }

  function isReplay() { return S.phase === 'replay' || (S.onDemand && S.phase !== 'connecting'); }

  function setPhase(p) {
    if (p === S.phase) return;
    var was = S.phase;
    S.phase = p;
    body.setAttribute('data-phase', p);
    stage.setAttribute('data-phase', p);
    var text = isReplay() ? first(S.event && S.event.replay_label, '') : first(S.event && S.event.label, '');
    if (text && String(text).trim()) labelEl.textContent = String(text);
    ui.lobby.hidden = p !== 'lobby';
    if (p === 'lobby') {
      video.preload = 'metadata';
      ui.starts.textContent = 'Starts ' + fmtWhen(S.startsAt) + (ZONE ? ' (' + ZONE + ')' : '');
    }
    if (p === 'live') {
      video.preload = 'auto';
      if (!S.behind) goLive(false);
    }
    if (p === 'replay') {
      video.preload = 'auto';
      S.behind = false;
      setRate(1);
      if (was !== 'live' && video.paused) showBigPlay(true);
      // The server counts a connection as live or replay when it opens: reconnect,
      // so positions are this player's own from now on.
      if (was === 'live' && ws) {
        S.switching = true;
        try { ws.close(); } catch (e) { S.switching = false; }
      }
    }
    if (p === 'over') {
      selfPause();
      setRate(1);
    }
    renderNotice();
    renderRegistration();
    renderControls();
    renderChat(true);
  }

  function renderNotice() {
    var text = '';
    var link = null;
    if (S.phase === 'over' && !S.showing) {
      text = 'There is no showing of this event right now.';
    } else if (S.phase === 'over') {
      text = S.replayShowing ? 'This showing has ended.' : 'This showing has ended. Thank you for watching.';
    }
    if (S.replayShowing && (S.phase === 'over' || S.phase === 'lobby')) {
      link = { href: '?showing=' + encodeURIComponent(S.replayShowing.id), text: 'Watch the replay of the last showing' };
    }
    ui.notice.hidden = !text && !(link && S.phase === 'over');
    ui.noticeText.textContent = text;
    ui.noticeLink.hidden = !link;
    if (link) {
      ui.noticeLink.href = link.href;
      ui.noticeLink.textContent = link.text;
      if (S.phase === 'lobby' && ui.noticeLink.parentNode !== ui.lobby) ui.lobby.appendChild(ui.noticeLink);
      if (S.phase !== 'lobby' && ui.noticeLink.parentNode !== ui.notice) ui.notice.appendChild(ui.noticeLink);
    }
  }

  var selfSeekUntil = 0;
  var seekStartedAt = 0;
  var seekLag = 0; // how long seeks take here (ms), to land on live
  var settleUntil = 0;
  var ownPause = false;

  function seekTo(ms) {
    var max = S.duration ? S.duration / 1000 : (isFinite(video.duration) ? video.duration : Infinity);
    var target = clamp(ms / 1000, 0, Math.max(0, max - 0.05));
    seekStartedAt = localNow();
    selfSeekUntil = seekStartedAt + 3000;
    try { video.currentTime = target; } catch (e) { /* not ready */ }
  }

  function setRate(r) {
    if (Math.abs(video.playbackRate - r) > 0.001) video.playbackRate = r;
  }

  function selfPause() {
    if (video.paused) return;
    ownPause = true;
    video.pause();
    setTimeout(function () { ownPause = false; }, 0);
  }

  function tryPlay() {
    var p;
    try { p = video.play(); } catch (e) { p = null; }
    if (p && typeof p.then === 'function') {
      p.then(function () { showBigPlay(false); }, function () {
        // Autoplay refused even muted: the viewer starts it.
        showBigPlay(true);
      });
    }
  }

  function showBigPlay(on) {
    ui.bigPlay.hidden = !on;
  }

  function goLive(fromUser) {
    S.behind = false;
    S.liveStarted = true;
    ui.behind.hidden = true;
    setRate(1);
    if (video.readyState >= 1) seekTo(livePos() + seekLag);
    else video.addEventListener('loadedmetadata', function once() {
      video.removeEventListener('loadedmetadata', once);
      if (S.phase === 'live' && !S.behind) seekTo(livePos() + seekLag);
    });
    tryPlay();
    if (fromUser) renderControls();
  }

  function fallBehind() {
    if (S.phase !== 'live' || S.behind) return;
    S.behind = true;
    setRate(1);
    renderControls();
  }

  /** Drift correction (watching.md, Synchronisation 3), every 250 ms while live. */
  function correctDrift() {
    if (S.phase !== 'live' || S.behind || video.paused || video.seeking || video.readyState < 2) return;
    if (localNow() < settleUntil) return;
    var live = livePos();
    if (S.duration && live >= S.duration) return;
    var drift = video.currentTime * 1000 - live;
    var abs = Math.abs(drift);
    if (abs > DRIFT_SEEK_MS) {
      setRate(1);
      seekTo(live + seekLag);
    } else if (abs >= DRIFT_IGNORE_MS) {
      setRate(clamp(1 - drift / 1000, RATE_MIN, RATE_MAX));
    } else {
      setRate(1);
    }
  }

  video.addEventListener('seeking', function () {
    var own = localNow() < selfSeekUntil;
    if (S.phase !== 'live') return;
    var live = livePos();
    // Nobody is ahead of live: a seek past it (from anywhere) comes back.
    if (video.currentTime * 1000 > live + DRIFT_SEEK_MS) {
      seekTo(live);
      return;
    }
    if (!own && video.currentTime * 1000 < live - DRIFT_SEEK_MS) fallBehind();
  });
  video.addEventListener('seeked', function () {
    if (localNow() < selfSeekUntil) {
      var took = localNow() - seekStartedAt;
      if (took >= 0 && took < 2000) seekLag = seekLag ? seekLag * 0.5 + took * 0.5 : took;
      seekLag = Math.min(seekLag, 400);
      selfSeekUntil = 0;
    }
    settleUntil = localNow() + 300;
    tick();
  });
  video.addEventListener('pause', function () {
    if (ownPause || video.ended) return;
    fallBehind();
    renderControls();
  });
  video.addEventListener('play', function () { showBigPlay(false); renderControls(); });
  video.addEventListener('playing', function () { settleUntil = localNow() + 200; renderControls(); });
  video.addEventListener('volumechange', renderControls);
  video.addEventListener('loadedmetadata', function () {
    if (!S.duration && isFinite(video.duration)) S.duration = video.duration * 1000;
    renderControls();
  });
  video.addEventListener('ended', function () { setRate(1); renderControls(); tick(); });

  // ─────────────────────────────────────────────────────────── controls ──
  function renderControls() {
    var p = S.phase;
    var playing = !video.paused && !video.ended;
    var canPlay = p === 'live' || p === 'replay';
    ui.play.disabled = !canPlay;
    ui.play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
    ui.play.classList.toggle('playing', playing);
    ui.mute.setAttribute('aria-label', video.muted ? 'Unmute' : 'Mute');
    ui.mute.setAttribute('aria-pressed', video.muted ? 'true' : 'false');
    ui.mute.classList.toggle('muted', video.muted);
    ui.unmuteHint.hidden = !(video.muted && canPlay && playing && !S.unmutedOnce);
    ui.seek.disabled = !canPlay;
    var dur = S.duration || 0;
    ui.seek.max = String(dur / 1000);
    var pos = position();
    if (!S.dragging) ui.seek.value = String(pos / 1000);
    var live = p === 'live' ? livePos() : dur;
    ui.seek.style.setProperty('--played', dur ? (pos / dur * 100).toFixed(2) + '%' : '0%');
    ui.seek.style.setProperty('--live', dur ? (live / dur * 100).toFixed(2) + '%' : '0%');
    ui.seek.setAttribute('aria-valuetext', fmtClock(pos) + (p === 'live' ? (S.behind ? ', behind live' : ', live') : ' of ' + fmtClock(dur)));
    var chapter = chapterAt(pos);
    ui.time.textContent = fmtClock(pos) + (p === 'replay' || p === 'over' ? ' / ' + fmtClock(dur) : '') +
      (chapter && p === 'live' ? ' · ' + chapter.title : '');
    ui.liveState.hidden = p !== 'live';
    ui.liveState.textContent = S.behind ? 'Behind live' : 'Live';
    ui.liveState.classList.toggle('behind', S.behind);
    ui.behind.hidden = !(p === 'live' && S.behind);
    ui.chapterWrap.hidden = !(p === 'replay' && S.chapters.length > 1);
    if (p === 'replay' && chapter && document.activeElement !== ui.chapter) ui.chapter.value = String(chapter.at);
  }

  function chapterAt(pos) {
    var c = null;
    S.chapters.forEach(function (x) { if (x.at <= pos) c = x; });
    return c;
  }

  function renderChapters() {
    ui.chapter.textContent = '';
    S.chapters.forEach(function (c) {
      var o = el('option', null, fmtClock(c.at) + ' ' + c.title);
      o.value = String(c.at);
      ui.chapter.appendChild(o);
    });
  }

  /** A seek asked for by the viewer: never ahead of live; back is "behind live". */
  function userSeek(ms) {
    if (S.phase === 'live') {
      var live = livePos();
      if (ms >= live - 1000) { goLive(true); return; }
      fallBehind();
      seekTo(ms);
    } else if (S.phase === 'replay') {
      seekTo(ms);
    }
    renderControls();
  }

  function togglePlay() {
    if (S.phase !== 'live' && S.phase !== 'replay') return;
    if (video.paused || video.ended) {
      if (S.phase === 'replay' && video.ended) seekTo(0);
      tryPlay();
    } else {
      video.pause(); // the pause listener puts a live viewer behind
    }
    renderControls();
  }

  function toggleMute() {
    video.muted = !video.muted;
    if (!video.muted) {
      S.unmutedOnce = true;
      if (video.volume === 0) video.volume = 1;
    }
    renderControls();
  }

  function fullscreenElement() {
    return document.fullscreenElement || document.webkitFullscreenElement || null;
  }

  function toggleFullscreen() {
    var req = stage.requestFullscreen || stage.webkitRequestFullscreen;
    if (!req) {
      // No element full screen (iPhone): fill the window with the stage instead.
      stage.classList.toggle('pseudo-full');
      ui.fullscreen.setAttribute('aria-pressed', stage.classList.contains('pseudo-full') ? 'true' : 'false');
      return;
    }
    if (fullscreenElement()) {
      (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    } else {
      var r = req.call(stage);
      if (r && r.catch) r.catch(function () { /* refused */ });
    }
  }
  document.addEventListener('fullscreenchange', function () {
    var on = fullscreenElement() === stage;
    ui.fullscreen.setAttribute('aria-label', on ? 'Exit full screen' : 'Full screen');
    ui.fullscreen.setAttribute('aria-pressed', on ? 'true' : 'false');
  });

  ui.play.addEventListener('click', togglePlay);
  ui.bigPlay.addEventListener('click', function () {
    if (S.phase === 'live' && !S.behind) goLive(true);
    else tryPlay();
  });
  ui.mute.addEventListener('click', toggleMute);
  ui.unmute.addEventListener('click', function () {
    if (video.muted) toggleMute();
    ui.mute.focus();
  });
  ui.fullscreen.addEventListener('click', toggleFullscreen);
  ui.goLive.addEventListener('click', function () { goLive(true); });
  ui.seek.addEventListener('input', function () {
    S.dragging = true;
    var v = Number(ui.seek.value) * 1000;
    if (S.phase === 'live' && v > livePos()) ui.seek.value = String(livePos() / 1000);
  });
  ui.seek.addEventListener('change', function () {
    S.dragging = false;
    userSeek(Number(ui.seek.value) * 1000);
  });
  ui.chapter.addEventListener('change', function () { userSeek(Number(ui.chapter.value)); });
  video.addEventListener('click', togglePlay);
  stage.addEventListener('keydown', function (e) {
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    var k = e.key;
    if (k === 'k' || (k === ' ' && t.tagName !== 'BUTTON' && t.tagName !== 'A')) { togglePlay(); e.preventDefault(); }
    else if (k === 'm') { toggleMute(); e.preventDefault(); }
    else if (k === 'f') { toggleFullscreen(); e.preventDefault(); }
    else if (k === 'ArrowLeft' || k === 'ArrowRight') {
      if (S.phase !== 'live' && S.phase !== 'replay') return;
      userSeek(position() + (k === 'ArrowLeft' ? -5000 : 5000));
      e.preventDefault();
    }
  });

  // ─────────────────────────────────────────────────────────────── lobby ──
  function renderCountdown(now) {
    if (S.phase !== 'lobby' || S.startsAt == null) return;
    var left = S.startsAt - now;
    var text = left > 0 ? fmtCountdown(left) : 'Starting…';
    if (ui.countdown.textContent !== text) ui.countdown.textContent = text;
  }

  // ──────────────────────────────────────────────────────── registration ──
  var registration = { fields: null, asked: false, done: false };

  function setupRegistration() {
    var reg = S.event && S.event.registration;
    if (isObj(reg) || Array.isArray(reg)) {
      registration.flow = isObj(reg) && reg.flow ? String(reg.flow) : null;
      buildRegistration(Array.isArray(reg) ? reg : reg.fields || []);
      return;
    }
    if (S.event && 'registration' in S.event) return; // null: no registration
    if (registration.asked) return;
    registration.asked = true;
    // Not in hello: the public listing may say whether the event takes registrations.
    fetch('/api/events/' + encodeURIComponent(EVENT_ID), { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        var r = d && d.registration;
        if (isObj(r) || Array.isArray(r)) buildRegistration(Array.isArray(r) ? r : r.fields || []);
      })
      .catch(function () { /* no form */ });
  }

  function buildRegistration(list) {
    var fields = ['name', 'email'];
    var listed = {};
    (list || []).forEach(function (f) { listed[isObj(f) ? f.name : f] = true; });
    (list || []).forEach(function (f) {
      var n = isObj(f) ? f.name : f;
      if (n && fields.indexOf(String(n)) < 0) fields.push(String(n));
    });
    if (registration.fields && registration.fields.join() === fields.join()) { renderRegistration(); return; }
    registration.fields = fields;
    ui.registerFields.textContent = '';
    fields.forEach(function (f) {
      var id = 'reg-' + f.replace(/[^a-z0-9_]/gi, '');
      var wrap = el('div', 'field');
      var lab = el('label', null, humanField(f));
      lab.htmlFor = id;
      var input = el('input');
      input.id = id;
      input.name = f;
      // The name always; the email when the event asks for it; every other field.
      input.required = f === 'name' || f !== 'email' || !!listed.email;
      if (!input.required) lab.appendChild(el('span', 'optional', ' (optional)'));
      input.type = f === 'email' ? 'email' : 'text';
      if (f === 'name') { input.autocomplete = 'name'; input.maxLength = NAME_MAX; }
      else if (f === 'email') input.autocomplete = 'email';
      else input.maxLength = 200;
      wrap.appendChild(lab);
      wrap.appendChild(input);
      ui.registerFields.appendChild(wrap);
    });
    renderRegistration();
  }

  function renderRegistration() {
    ui.register.hidden = !(registration.fields && (S.phase === 'lobby' || S.phase === 'live'));
  }

  ui.registerForm.addEventListener('submit', function (e) {
    e.preventDefault();
    ui.registerError.hidden = true;
    var data = { fields: {} };
    var missing = null;
    (registration.fields || []).forEach(function (f) {
      var input = ui.registerForm.elements[f];
      var v = input ? input.value.trim() : '';
      if (input && input.required && !v && !missing) missing = input;
      if (input && input.type === 'email' && v && !/^[^\s@]+@[^\s@]+$/.test(v) && !missing) missing = input;
      if (f === 'name' || f === 'email') data[f] = v;
      else if (v) data.fields[f] = v;
    });
    if (missing) {
      ui.registerError.textContent = 'Please fill in ' + humanField(missing.name).toLowerCase() + (missing.type === 'email' ? ' (a valid address)' : '') + '.';
      ui.registerError.hidden = false;
      missing.setAttribute('aria-invalid', 'true');
      missing.focus();
      return;
    }
    if (S.showing && S.showing.id) data.showing = S.showing.id;
    if (ZONE) data.timezone = ZONE;
    if (S.viewer) data.viewer = S.viewer;
    var submit = ui.registerForm.querySelector('button[type=submit]');
    submit.disabled = true;
    fetch('/api/events/' + encodeURIComponent(EVENT_ID) + '/register', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(data)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) { return { ok: r.ok, body: j || {} }; });
    }).then(function (res) {
      submit.disabled = false;
      if (!res.ok) {
        ui.registerError.textContent = errorText(res.body.code, res.body.message || 'Registration failed. Please try again.');
        ui.registerError.hidden = false;
        return;
      }
      var b = res.body;
      if (b.viewer && b.viewer !== S.viewer) {
        S.viewer = String(b.viewer);
        storageSet(STORAGE_VIEWER, S.viewer);
      }
      if (!S.name && data.name && !S.moderator) {
        send({ t: 'name', name: data.name.slice(0, NAME_MAX) }, { ok: function () { S.name = data.name; renderComposer(); } });
      }
      registration.done = true;
      ui.registerForm.hidden = true;
      ui.registerDone.textContent = '';
      ui.registerDone.appendChild(el('p', 'done-title', b.new === false
        ? 'You were already registered for this showing, ' + data.name + '.'
        : 'You are registered, ' + data.name + '.'));
      var rems = Array.isArray(b.reminders) ? b.reminders : [];
      if (rems.length) {
        ui.registerDone.appendChild(el('p', null, 'We will remind you:'));
        var ul = el('ul');
        rems.forEach(function (x) {
          var at = instantMs(isObj(x) ? first(x.at, x.due_at, x.send_at) : x);
          var lbl = isObj(x) ? first(x.label, x.offset, x.kind, '') : '';
          var txt = at != null ? fmtWhen(at) : '';
          if (lbl) txt = txt ? txt + ' (' + lbl + ')' : String(lbl);
          ul.appendChild(el('li', null, txt));
        });
        ui.registerDone.appendChild(ul);
      }
      ui.registerDone.hidden = false;
      ui.registerDone.setAttribute('tabindex', '-1');
      ui.registerDone.focus();
      var flow = first(b.flow, registration.flow);
      if (flow) {
        // The event's registration flow continues the sign-up in the chat widget.
        var box = el('div', 'flow-box');
        box.id = 'volley-flow-registration';
        ui.registerDone.appendChild(box);
        mountFlow({ box: box, mounted: false }, { flow: String(flow) });
      }
    }, function () {
      submit.disabled = false;
      ui.registerError.textContent = 'Registration failed: no connection. Please try again.';
      ui.registerError.hidden = false;
    });
  });

  // ──────────────────────────────────────────────────────────────── chat ──
  function addMessage(m) {
    if (!isObj(m) || m.id == null) return;
    var key = 'm:' + m.id;
    var old = S.entries[key];
    var entry = {
      key: key, kind: 'msg', id: m.id, data: m,
      at: instantMs(m.at), pos: durMs(m.pos),
      node: old ? old.node : null
    };
    S.entries[key] = entry;
    if (old && old.node) fillMessage(entry);
    S.orderMode = null;
  }

  function onDeleted(ids) {
    ids.forEach(function (id) {
      var e = S.entries['m:' + id];
      if (e) {
        if (e.node && e.node.parentNode) e.node.parentNode.removeChild(e.node);
        delete S.entries['m:' + id];
      }
      if (S.pinned && S.pinned.id === id) { S.pinned = null; renderPinned(); }
    });
    S.orderMode = null;
    renderChat(true);
  }

  function sayEntry(cue) {
    var key = 'c:' + cue.i;
    if (!S.entries[key]) {
      S.entries[key] = {
        key: key, kind: 'say', cue: cue,
        at: S.startsAt != null ? S.startsAt + cue.at : null, pos: cue.at, node: null
      };
      S.orderMode = null;
    }
    return S.entries[key];
  }

  function messageNode(entry) {
    if (entry.node) return entry.node;
    var li = el('li', 'msg');
    entry.node = li;
    if (entry.kind === 'say') {
      li.classList.add('host');
      li.setAttribute('data-cue', 'say');
      var head = el('div', 'msg-head');
      head.appendChild(el('span', 'who', 'Host'));
      head.appendChild(el('span', 'badge host-badge', 'Host'));
      li.appendChild(head);
      li.appendChild(markdown(entry.cue.text));
      return li;
    }
    fillMessage(entry);
    return li;
  }

  function fillMessage(entry) {
    var m = entry.data;
    var li = entry.node;
    li.textContent = '';
    li.setAttribute('data-id', String(m.id));
    if (m.viewer_id != null) li.setAttribute('data-viewer', String(m.viewer_id));
    var mine = S.viewerId != null && m.viewer_id === S.viewerId;
    li.classList.toggle('mine', mine);
    li.classList.toggle('from-mod', m.moderator === true);
    var head = el('div', 'msg-head');
    head.appendChild(el('span', 'who', first(m.name, 'Viewer')));
    if (m.moderator === true) head.appendChild(el('span', 'badge mod-badge', 'Moderator'));
    if (mine) head.appendChild(el('span', 'badge you-badge', 'You'));
    var when = el('span', 'when');
    if (isReplay() && entry.pos != null) when.textContent = fmtClock(entry.pos);
    else if (entry.at != null) when.textContent = fmtTime(entry.at);
    head.appendChild(when);
    var rep = el('span', 'reports');
    rep.hidden = true;
    head.appendChild(rep);
    li.appendChild(head);
    li.appendChild(el('p', 'msg-text', first(m.text, '')));
    var actions = el('div', 'msg-actions');
    var who = first(m.name, 'this viewer');
    if (!mine && !S.moderator) {
      var report = button('act act-report', 'Report', 'Report the message from ' + who);
      report.setAttribute('data-action', 'report');
      actions.appendChild(report);
    }
    if (S.moderator) {
      [['pin', 'Pin'], ['delete', 'Delete'], ['mute', 'Mute'], ['ban', 'Ban']].forEach(function (a) {
        if ((a[0] === 'mute' || a[0] === 'ban') && (mine || m.moderator === true || m.viewer_id == null)) return;
        var b = button('act act-' + a[0], a[1], a[1] + ' the message from ' + who);
        if (a[0] === 'mute') b.setAttribute('aria-label', 'Mute ' + who + ' for ' + S.modMinutes + ' minutes');
        if (a[0] === 'ban') b.setAttribute('aria-label', 'Ban ' + who + ' from this event');
        b.setAttribute('data-action', a[0]);
        actions.appendChild(b);
      });
    }
    if (actions.childNodes.length) li.appendChild(actions);
    refreshReports(m.id);
  }

  function refreshReports(id) {
    var e = S.entries['m:' + id];
    if (!e || !e.node) return;
    var n = Number(S.reports[id]) || 0;
    var r = e.node.querySelector('.reports');
    if (!r) return;
    r.hidden = !(S.moderator && n > 0);
    r.textContent = n === 1 ? '1 report' : n + ' reports';
  }

  /** The key order: by time live, by video position in a replay. */
  function sortEntries() {
    var mode = isReplay() ? 'pos' : 'at';
    if (S.orderMode === mode) return;
    S.orderMode = mode;
    var list = Object.keys(S.entries).map(function (k) { return S.entries[k]; });
    list.sort(function (a, b) {
      var ka = mode === 'pos' ? first(a.pos, 0) : first(a.at, 0);
      var kb = mode === 'pos' ? first(b.pos, 0) : first(b.at, 0);
      if (ka !== kb) return ka - kb;
      if (a.kind !== b.kind) return a.kind === 'say' ? -1 : 1;
      var ta = first(a.at, 0);
      var tb = first(b.at, 0);
      return ta - tb || (a.key < b.key ? -1 : 1);
    });
    S.order = list.map(function (e) { return e.key; });
  }

  function entryVisible(e, pos) {
    if (e.kind === 'say') return S.phase !== 'lobby' && S.phase !== 'connecting' && pos >= e.cue.at;
    if (isReplay()) return e.pos == null || e.pos <= pos;
    return true;
  }

  function renderChat(force) {
    if (force) S.orderMode = null;
    var pos = position();
    S.cues.forEach(function (c) { if (c.kind === 'say') sayEntry(c); });
    sortEntries();
    var want = S.order.filter(function (k) { var e = S.entries[k]; return e && entryVisible(e, pos); });
    var have = S.rendered;
    var same = want.length === have.length;
    for (var i = 0; same && i < want.length; i++) same = want[i] === have[i];
    if (same) return;
    var log = ui.log;
    var stick = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    var p = 0;
    while (p < want.length && p < have.length && want[p] === have[p]) p++;
    // The log holds have[0..p) first (a deleted message's node is already gone).
    Array.prototype.slice.call(log.children, p).forEach(function (n) { log.removeChild(n); });
    for (var k = p; k < want.length; k++) {
      var node = messageNode(S.entries[want[k]]);
      node.setAttribute('data-key', want[k]);
      log.appendChild(node);
    }
    S.rendered = want;
    if (stick || force) log.scrollTop = log.scrollHeight;
  }

  ui.log.addEventListener('click', function (e) {
    var b = e.target.closest ? e.target.closest('button[data-action]') : null;
    if (!b) return;
    var li = b.closest('li.msg');
    var id = li && li.getAttribute('data-id');
    var entry = id != null && S.entries['m:' + id];
    if (!entry) return;
    var m = entry.data;
    var action = b.getAttribute('data-action');
    var done = function (text) {
      return {
        ok: function () { if (text) setStatus(ui.chatStatus, text); },
        error: function (x) { showChatError(errorText(x.code, x.message)); }
      };
    };
    if (action === 'report') {
      openReport(li, entry);
    } else if (action === 'delete') {
      send({ t: 'delete', message: m.id }, done('Message deleted.'));
    } else if (action === 'pin') {
      send({ t: 'pin', message: m.id }, done('Message pinned.'));
    } else if (action === 'mute') {
      send({ t: 'mute', viewer_id: m.viewer_id, minutes: S.modMinutes }, done(first(m.name, 'The viewer') + ' is muted for ' + S.modMinutes + ' minutes.'));
    } else if (action === 'ban') {
      if (b.getAttribute('data-confirm') !== '1') {
        b.setAttribute('data-confirm', '1');
        b.textContent = 'Confirm ban';
        setTimeout(function () {
          if (b.isConnected) { b.removeAttribute('data-confirm'); b.textContent = 'Ban'; }
        }, 5000);
        return;
      }
      send({ t: 'ban', viewer_id: m.viewer_id }, done(first(m.name, 'The viewer') + ' is banned from this event.'));
    }
  });

  function openReport(li, entry) {
    if (li.querySelector('.report-form')) return;
    var form = el('form', 'report-form');
    var id = 'report-' + String(entry.id).replace(/[^a-z0-9_-]/gi, '');
    var lab = el('label', null, 'Why?');
    lab.htmlFor = id;
    var sel = el('select');
    sel.id = id;
    [['spam', 'Spam'], ['abuse', 'Abusive or hateful'], ['off-topic', 'Off topic'], ['other', 'Something else']].forEach(function (r) {
      var o = el('option', null, r[1]);
      o.value = r[0];
      sel.appendChild(o);
    });
    var go = el('button', 'act', 'Send report');
    go.type = 'submit';
    var cancel = button('act', 'Cancel');
    form.appendChild(lab);
    form.appendChild(sel);
    form.appendChild(go);
    form.appendChild(cancel);
    li.appendChild(form);
    sel.focus();
    cancel.addEventListener('click', function () { form.remove(); });
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      send({ t: 'report', message: entry.id, reason: sel.value }, {
        ok: function () {
          form.remove();
          var r = li.querySelector('[data-action=report]');
          if (r) { r.textContent = 'Reported'; r.disabled = true; }
        },
        error: function (x) { form.remove(); showChatError(errorText(x.code, x.message)); }
      });
    });
  }

  function renderPinned() {
    var p = S.pinned;
    ui.pinned.textContent = '';
    ui.pinned.hidden = !p;
    if (!p) return;
    var head = el('div', 'pin-head');
    head.appendChild(el('span', 'pin-kicker', 'Pinned'));
    if (S.moderator) {
      var un = button('act', 'Unpin', 'Unpin the message');
      un.addEventListener('click', function () {
        send({ t: 'pin', message: null }, { error: function (x) { showChatError(errorText(x.code, x.message)); } });
      });
      head.appendChild(un);
    }
    ui.pinned.appendChild(head);
    var q = isObj(p.question) ? p.question : null;
    if (q || p.answer != null) {
      var qt = q ? q.text : p.question;
      if (qt) ui.pinned.appendChild(el('p', 'pin-q', 'Q: ' + qt));
      var ans = isObj(p.answer) ? p.answer.text : first(p.answer, q && q.answer);
      if (ans) ui.pinned.appendChild(el('p', 'pin-a', 'A: ' + (isObj(ans) ? ans.text : ans)));
    } else {
      var line = el('p', 'pin-text');
      if (p.name) line.appendChild(el('strong', null, p.name + ': '));
      line.appendChild(document.createTextNode(first(p.text, '')));
      ui.pinned.appendChild(line);
    }
  }

  function renderSlow() {
    var s = S.slow;
    ui.slowNotice.hidden = !(s > 0);
    ui.slowNotice.textContent = s > 0
      ? 'Slow mode: one message every ' + (s >= 60 && s % 60 === 0 ? (s / 60) + (s === 60 ? ' minute' : ' minutes') : s + (s === 1 ? ' second' : ' seconds')) + (S.moderator ? ' (moderators are exempt).' : '.')
      : '';
    if (document.activeElement !== ui.slowSelect) {
      var has = Array.prototype.some.call(ui.slowSelect.options, function (o) { return o.value === String(s); });
      if (!has) {
        var o = el('option', null, s + ' seconds');
        o.value = String(s);
        ui.slowSelect.appendChild(o);
      }
      ui.slowSelect.value = String(s);
    }
  }

  ui.muteSelect.addEventListener('change', function () {
    S.modMinutes = Number(ui.muteSelect.value) || 10;
    // The mute buttons say for how long.
    Array.prototype.forEach.call(ui.log.querySelectorAll('button[data-action=mute]'), function (b) {
      var who = b.closest('li.msg').querySelector('.who');
      b.setAttribute('aria-label', 'Mute ' + (who ? who.textContent : 'this viewer') + ' for ' + S.modMinutes + ' minutes');
    });
  });

  ui.slowSelect.addEventListener('change', function () {
    var s = Number(ui.slowSelect.value) || 0;
    send({ t: 'slow', seconds: s }, {
      error: function (x) { showChatError(errorText(x.code, x.message)); renderSlow(); }
    });
  });

  var mutedTimer = null;
  function renderComposer() {
    var now = serverNow();
    var muted = S.mutedUntil && S.mutedUntil > now;
    var blocked = S.banned || muted;
    ui.chatText.disabled = blocked;
    ui.chatSend.disabled = blocked;
    if (S.banned) setStatus(ui.chatStatus, ERRORS.banned);
    else if (muted) setStatus(ui.chatStatus, 'A moderator has muted you until ' + fmtTime(S.mutedUntil) + '.');
    else if (ui.chatStatus.getAttribute('data-kind') === 'block') setStatus(ui.chatStatus, '');
    if (blocked) ui.chatStatus.setAttribute('data-kind', 'block');
    clearTimeout(mutedTimer);
    if (muted) mutedTimer = setTimeout(renderComposer, Math.min(S.mutedUntil - now + 50, 600000));
    ui.nameStep.hidden = !!S.name || !ui.nameStep.classList.contains('asked');
  }

  function setStatus(node, text) {
    node.textContent = text || '';
    node.removeAttribute('data-kind');
  }

  function showChatError(text) {
    ui.chatError.textContent = text;
    ui.chatError.hidden = !text;
  }

  function askName() {
    ui.nameStep.classList.add('asked');
    ui.nameStep.hidden = false;
    ui.nameInput.focus();
  }

  function saveName() {
    var n = ui.nameInput.value.trim();
    if (!n) { showChatError('Please choose a name for the chat.'); ui.nameInput.focus(); return; }
    if (chars(n) > NAME_MAX) { showChatError('Names are at most ' + NAME_MAX + ' characters.'); ui.nameInput.focus(); return; }
    ui.nameSave.disabled = true;
    send({ t: 'name', name: n }, {
      ok: function () {
        ui.nameSave.disabled = false;
        S.name = n;
        showChatError('');
        ui.nameStep.hidden = true;
        if (S.pendingText) { var t = S.pendingText; S.pendingText = null; sendChat(t); }
        ui.chatText.focus();
      },
      error: function (x) {
        ui.nameSave.disabled = false;
        showChatError(errorText(x.code, x.message));
        ui.nameInput.focus();
      }
    });
  }

  function sendChat(text) {
    ui.chatSend.disabled = true;
    send({ t: 'chat', text: text }, {
      ok: function () {
        ui.chatSend.disabled = false;
        if (ui.chatText.value.trim() === text) ui.chatText.value = '';
        showChatError('');
        autosize(ui.chatText);
      },
      error: function (x) {
        ui.chatSend.disabled = false;
        if (x.code === 'no_name') { S.name = null; S.pendingText = text; askName(); }
        if (x.code === 'muted' || x.code === 'banned') {
          if (x.code === 'banned') S.banned = true;
          renderComposer();
        }
        showChatError(errorText(x.code, x.message));
      }
    });
  }

  ui.chatForm.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = ui.chatText.value.trim();
    if (!text) return;
    if (chars(text) > MESSAGE_MAX) { showChatError('Messages are at most ' + MESSAGE_MAX + ' characters.'); return; }
    if (!S.name) { S.pendingText = text; askName(); return; }
    sendChat(text);
  });
  ui.chatText.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (typeof ui.chatForm.requestSubmit === 'function') ui.chatForm.requestSubmit();
      else ui.chatForm.dispatchEvent(new Event('submit', { cancelable: true }));
    }
  });
  ui.chatText.addEventListener('input', function () {
    autosize(ui.chatText);
    var n = chars(ui.chatText.value);
    if (n > MESSAGE_MAX - 50) setStatus(ui.chatStatus, n + ' / ' + MESSAGE_MAX);
    else if (/ \/ \d+$/.test(ui.chatStatus.textContent)) setStatus(ui.chatStatus, '');
  });
  ui.nameSave.addEventListener('click', saveName);
  ui.nameInput.addEventListener('keydown', function (e) {
    if (e.key === 'Enter') { e.preventDefault(); saveName(); }
  });

  function autosize(t) {
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight + 2, 140) + 'px';
  }

  // ───────────────────────────────────────────────────── polls and offers ──
  function resetCues() {
    var sig = JSON.stringify(S.cues);
    var votes = {};
    var seen = {};
    Object.keys(S.polls).forEach(function (id) { votes[id] = S.polls[id].mine; });
    Object.keys(S.offers).forEach(function (id) { seen[id] = S.offers[id].seen; });
    if (sig !== S.cueSig) {
      // Another timeline (a new showing or version): start the cards again.
      S.cueSig = sig;
      ui.cues.textContent = '';
      ui.flows.textContent = '';
      S.flows = {};
      votes = {};
      seen = {};
    }
    var polls = {};
    var offers = {};
    S.cues.forEach(function (c) {
      if (c.kind === 'poll') {
        var old = S.polls[c.id];
        polls[c.id] = { cue: c, counts: null, voters: 0, mine: votes[c.id] || null, card: old && old.card && old.card.parentNode ? old.card : null };
      } else if (c.kind === 'offer') {
        var o = S.offers[c.id];
        offers[c.id] = { cue: c, card: o && o.card && o.card.parentNode ? o.card : null, seen: !!seen[c.id] };
      }
    });
    S.polls = polls;
    S.offers = offers;
    Object.keys(S.polls).forEach(function (id) { if (S.polls[id].card) rebuildPoll(S.polls[id]); });
  }

  function onPollResults(m) {
    if (!isObj(m) || m.id == null) return;
    var p = S.polls[m.id];
    if (!p) return;
    p.counts = Array.isArray(m.counts) ? m.counts.map(Number) : p.counts;
    p.voters = Number(first(m.voters, p.voters, 0)) || 0;
    if (p.card) renderPollResults(p);
  }

  function insertCard(card, at) {
    card.setAttribute('data-at', String(at));
    // Newest first: a card goes before the first card that started earlier.
    var kids = ui.cues.children;
    for (var i = 0; i < kids.length; i++) {
      if (Number(kids[i].getAttribute('data-at')) < at) { ui.cues.insertBefore(card, kids[i]); return; }
    }
    ui.cues.appendChild(card);
  }

  function pollCard(p) {
    if (p.card) return p.card;
    var card = el('article', 'card poll');
    p.card = card;
    card.setAttribute('data-poll', p.cue.id);
    rebuildPoll(p);
    insertCard(card, p.cue.at);
    return card;
  }

  function rebuildPoll(p) {
    var c = p.cue;
    var card = p.card;
    card.textContent = '';
    var qid = 'poll-q-' + c.id.replace(/[^a-z0-9_-]/gi, '');
    card.setAttribute('aria-labelledby', qid);
    card.appendChild(el('p', 'kicker', c.multiple ? 'Poll · choose any' : 'Poll'));
    var q = el('h3', 'poll-q', c.question);
    q.id = qid;
    card.appendChild(q);
    var form = el('form', 'poll-form');
    var set = el('fieldset');
    set.setAttribute('aria-labelledby', qid);
    c.options.forEach(function (label, i) {
      var row = el('label', 'opt');
      var input = el('input');
      input.type = c.multiple ? 'checkbox' : 'radio';
      input.name = 'poll-' + c.id;
      input.value = String(i);
      row.appendChild(input);
      row.appendChild(el('span', null, label));
      set.appendChild(row);
    });
    form.appendChild(set);
    var vote = el('button', 'btn', 'Vote');
    vote.type = 'submit';
    form.appendChild(vote);
    card.appendChild(form);
    var status = el('p', 'status');
    status.setAttribute('role', 'status');
    card.appendChild(status);
    var err = el('p', 'error');
    err.setAttribute('role', 'alert');
    err.hidden = true;
    card.appendChild(err);
    var results = el('ol', 'results');
    results.hidden = true;
    results.setAttribute('aria-label', 'Results');
    card.appendChild(results);
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var picked = Array.prototype.filter.call(form.querySelectorAll('input'), function (x) { return x.checked; })
        .map(function (x) { return Number(x.value); });
      if (!picked.length) { err.textContent = 'Pick an option first.'; err.hidden = false; return; }
      vote.disabled = true;
      err.hidden = true;
      send({ t: 'vote', poll: c.id, options: picked }, {
        ok: function () { p.mine = picked; renderPoll(p, position()); },
        error: function (x) {
          vote.disabled = false;
          if (x.code === 'already') p.mine = p.mine || [];
          err.textContent = errorText(x.code, x.message);
          err.hidden = false;
          renderPoll(p, position());
        }
      });
    });
    renderPoll(p, position());
    renderPollResults(p);
  }

  function renderPoll(p, pos) {
    var c = p.cue;
    var card = p.card;
    if (!card) return;
    var open = pos >= c.at && pos < c.closeAt && S.phase !== 'lobby';
    var voted = p.mine != null;
    var form = card.querySelector('.poll-form');
    var status = card.querySelector('.status');
    form.hidden = !open || voted;
    var inputs = form.querySelectorAll('input');
    Array.prototype.forEach.call(inputs, function (x) { x.disabled = !open || voted; });
    form.querySelector('button').disabled = !open || voted;
    var text;
    if (voted) {
      var names = (p.mine || []).map(function (i) { return c.options[i]; }).filter(Boolean);
      text = names.length ? 'You voted: ' + names.join(', ') + '.' : 'You have voted.';
      if (!open) text += ' Voting is closed.';
    } else {
      text = open ? 'Voting closes at ' + fmtClock(c.closeAt) + '.' : 'Voting is closed.';
    }
    if (status.textContent !== text) status.textContent = text;
    card.classList.toggle('closed', !open);
    renderPollResults(p);
  }

  function renderPollResults(p) {
    var card = p.card;
    if (!card) return;
    var list = card.querySelector('.results');
    var show = p.counts && position() >= p.cue.resultsAt;
    list.hidden = !show;
    if (!show) return;
    var total = 0;
    p.counts.forEach(function (n) { total += n || 0; });
    var sig = p.counts.join(',') + '|' + p.voters;
    if (list.getAttribute('data-sig') === sig) return;
    list.setAttribute('data-sig', sig);
    list.textContent = '';
    p.cue.options.forEach(function (label, i) {
      var n = p.counts[i] || 0;
      var pct = total ? Math.round(n / total * 100) : 0;
      var li = el('li', 'result');
      li.setAttribute('data-option', String(i));
      var line = el('div', 'result-line');
      line.appendChild(el('span', 'result-label', label));
      line.appendChild(el('span', 'result-count', n + (n === 1 ? ' vote' : ' votes') + ' · ' + pct + '%'));
      li.appendChild(line);
      var bar = el('div', 'result-bar');
      var fill = el('span');
      fill.style.width = pct + '%';
      bar.appendChild(fill);
      li.appendChild(bar);
      list.appendChild(li);
    });
    var voters = el('li', 'voters', p.voters === 1 ? '1 voter' : p.voters + ' voters');
    list.appendChild(voters);
  }

  var QUIET = { ok: function () {}, error: function () {} };

  // The offer link carries who clicked it from which showing, so the seller can report
  // a sale back (POST /api/events/{id}/conversions, docs/watching.md).
  function offerHref(url) {
    try {
      var u = new URL(url);
      if (S.viewerId) u.searchParams.set('volley_viewer', S.viewerId);
      if (S.showing && S.showing.id) u.searchParams.set('volley_showing', S.showing.id);
      return u.toString();
    } catch (e) {
      return url;
    }
  }

  function offerCard(o) {
    if (o.card) return o.card;
    var c = o.cue;
    var card = el('article', 'card offer');
    card.setAttribute('data-offer', c.id);
    card.appendChild(el('p', 'kicker', 'Offer'));
    if (!c.url) card.appendChild(el('p', 'offer-text', c.text));
    if (c.url) {
      var a = el('a', 'btn offer-link');
      a.href = offerHref(c.url);
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.appendChild(document.createTextNode(c.text));
      a.appendChild(el('span', 'sr', ' (opens in a new tab)'));
      a.addEventListener('click', function () {
        send({ t: 'click', offer: c.id }, QUIET);
      });
      card.appendChild(a);
    }
    o.card = card;
    insertCard(card, c.at);
    return card;
  }

  function flowCard(cue) {
    var f = S.flows[cue.i];
    if (f) return f;
    var card = el('article', 'card flow');
    card.setAttribute('data-flow', cue.flow);
    var box = el('div', 'flow-box');
    box.id = 'volley-flow-' + cue.i;
    card.appendChild(box);
    ui.flows.appendChild(card);
    f = S.flows[cue.i] = { card: card, box: box, mounted: false };
    return f;
  }

  function mountFlow(f, cue) {
    if (f.mounted) return;
    f.mounted = true;
    if (window.Volley && typeof window.Volley.mount === 'function') {
      window.Volley.mount({ flow: cue.flow, mode: 'inline', target: f.box });
      return;
    }
    var s = document.createElement('script');
    s.src = '/widget.js';
    s.async = true;
    s.setAttribute('data-flow', cue.flow);
    s.setAttribute('data-mode', 'inline');
    s.setAttribute('data-target', '#' + f.box.id);
    document.body.appendChild(s);
  }

  /** Shows what the timeline has open at the player's own position. */
  function renderCues(pos) {
    var started = S.phase === 'live' || S.phase === 'replay' || S.phase === 'over';
    var qaOpen = false;
    var qaSeen = false;
    S.cues.forEach(function (c) {
      var reached = started && pos >= c.at;
      if (c.kind === 'poll') {
        var p = S.polls[c.id];
        if (!p) return;
        if (reached) { pollCard(p).hidden = false; renderPoll(p, pos); }
        else if (p.card) p.card.hidden = true;
      } else if (c.kind === 'offer') {
        var o = S.offers[c.id];
        if (!o) return;
        var on = reached && pos < c.until;
        if (on) {
          offerCard(o).hidden = false;
          if (!o.seen) { o.seen = true; send({ t: 'impression', offer: c.id }, QUIET); }
        } else if (o.card) o.card.hidden = true;
      } else if (c.kind === 'qa') {
        if (reached) qaSeen = true;
        if (reached && pos < c.until) qaOpen = true;
      } else if (c.kind === 'flow') {
        if (reached) {
          var f = flowCard(c);
          f.card.hidden = false;
          mountFlow(f, c);
        } else if (S.flows[c.i]) S.flows[c.i].card.hidden = true;
      }
    });
    var anyFlow = Object.keys(S.flows).some(function (k) { return !S.flows[k].card.hidden; });
    ui.flows.hidden = !anyFlow;
    var hasQuestions = Object.keys(S.questions).length > 0 || (S.answers || []).length > 0;
    setQa(qaOpen, qaSeen || hasQuestions);
  }

  // ───────────────────────────────────────────────────────────────── Q&A ──
  var qaState = { open: null, shown: null };

  function setQa(open, shown) {
    if (qaState.open === open && qaState.shown === shown) return;
    var wasShown = qaState.shown;
    qaState.open = open;
    qaState.shown = shown;
    ui.tabQa.hidden = !shown;
    ui.qaOpen.hidden = !open;
    ui.tabQa.setAttribute('aria-label', open ? 'Q&A (open)' : 'Q&A');
    ui.qaText.disabled = !open;
    ui.qaSend.disabled = !open;
    if (!open) setStatus(ui.qaStatus, shown ? 'Questions are closed at this point of the video.' : '');
    else if (/closed/.test(ui.qaStatus.textContent)) setStatus(ui.qaStatus, '');
    if (!shown && ui.tabQa.getAttribute('aria-selected') === 'true') selectTab(ui.tabChat);
    if (open && !wasShown) ui.tabQa.classList.add('attention');
  }

  function upsertQuestion(q) {
    if (!isObj(q) || q.id == null) return;
    var old = S.questions[q.id] || {};
    S.questions[q.id] = Object.assign({}, old, q);
  }

  function renderQuestions() {
    var list = Object.keys(S.questions).map(function (k) { return S.questions[k]; });
    list.sort(function (a, b) { return (b.votes || 0) - (a.votes || 0) || (a.id < b.id ? -1 : 1); });
    var focusId = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest('#qa-list li') ? document.activeElement.closest('li').getAttribute('data-id') : null;
    var openForms = {};
    Array.prototype.forEach.call(ui.qaList.querySelectorAll('li[data-id]'), function (li) {
      var f = li.querySelector('.answer-form');
      if (f) openForms[li.getAttribute('data-id')] = f;
    });
    ui.qaList.textContent = '';
    // Answers to this viewer's questions from earlier showings (and while they were away).
    var here = {};
    list.forEach(function (q) { if (q.answer) here[q.text] = true; });
    (S.answers || []).filter(function (a) { return a.question && a.answer && !here[a.question]; }).forEach(function (a) {
      var li = el('li', 'question answered-before');
      li.appendChild(el('p', 'kicker', 'Your question, answered'));
      li.appendChild(el('p', 'q-text', String(a.question)));
      var p = el('p', 'q-answer');
      p.appendChild(el('strong', null, 'Answer: '));
      p.appendChild(document.createTextNode(String(a.answer)));
      li.appendChild(p);
      ui.qaList.appendChild(li);
    });
    list.forEach(function (q) {
      var li = el('li', 'question');
      li.setAttribute('data-id', String(q.id));
      var mine = S.asked[q.id] || (S.viewerId != null && q.viewer_id === S.viewerId);
      var head = el('div', 'msg-head');
      head.appendChild(el('span', 'who', first(q.name, 'Viewer')));
      if (mine) head.appendChild(el('span', 'badge you-badge', 'You'));
      li.appendChild(head);
      li.appendChild(el('p', 'q-text', first(q.text, '')));
      var ans = isObj(q.answer) ? q.answer.text : q.answer;
      if (ans) {
        var a = el('p', 'q-answer');
        a.appendChild(el('strong', null, 'Answer: '));
        a.appendChild(document.createTextNode(String(ans)));
        li.appendChild(a);
      }
      var actions = el('div', 'msg-actions');
      var votes = Number(q.votes) || 0;
      var up = button('act act-upvote', '▲ ' + votes, 'Upvote: ' + votes + (votes === 1 ? ' vote' : ' votes'));
      var upped = !!S.upvoted[q.id];
      up.setAttribute('aria-pressed', upped ? 'true' : 'false');
      up.disabled = upped || mine;
      up.addEventListener('click', function () {
        up.disabled = true;
        send({ t: 'upvote', question: q.id }, {
          ok: function () { S.upvoted[q.id] = true; up.setAttribute('aria-pressed', 'true'); },
          error: function (x) {
            if (x.code === 'already') { S.upvoted[q.id] = true; return; }
            up.disabled = false;
            showError(ui.qaError, errorText(x.code, x.message));
          }
        });
      });
      actions.appendChild(up);
      if (S.moderator) {
        var ansBtn = button('act act-answer', ans ? 'Edit answer' : 'Answer', 'Answer the question from ' + first(q.name, 'a viewer'));
        ansBtn.addEventListener('click', function () { openAnswer(li, q); });
        actions.appendChild(ansBtn);
      }
      li.appendChild(actions);
      if (openForms[q.id]) li.appendChild(openForms[q.id]);
      ui.qaList.appendChild(li);
    });
    if (focusId != null) {
      var again = ui.qaList.querySelector('li[data-id="' + CSS.escape(focusId) + '"] button');
      if (again) again.focus();
    }
  }

  function openAnswer(li, q) {
    if (li.querySelector('.answer-form')) return;
    var form = el('form', 'answer-form');
    var id = 'answer-' + String(q.id).replace(/[^a-z0-9_-]/gi, '');
    var lab = el('label', null, 'Your answer');
    lab.htmlFor = id;
    var ta = el('textarea');
    ta.id = id;
    ta.rows = 2;
    var pinWrap = el('label', 'check');
    var pin = el('input');
    pin.type = 'checkbox';
    pin.checked = true;
    pinWrap.appendChild(pin);
    pinWrap.appendChild(el('span', null, 'Pin it for everyone now'));
    var go = el('button', 'btn', 'Send answer');
    go.type = 'submit';
    var cancel = button('act', 'Cancel');
    [lab, ta, pinWrap, go, cancel].forEach(function (x) { form.appendChild(x); });
    li.appendChild(form);
    ta.focus();
    cancel.addEventListener('click', function () { form.remove(); });
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var text = ta.value.trim();
      if (!text) { ta.focus(); return; }
      go.disabled = true;
      send({ t: 'answer', question: q.id, text: text, live: pin.checked }, {
        ok: function () { form.remove(); },
        error: function (x) { go.disabled = false; showError(ui.qaError, errorText(x.code, x.message)); }
      });
    });
  }

  function showError(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  }

  ui.qaForm.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = ui.qaText.value.trim();
    if (!text) return;
    if (chars(text) > QUESTION_MAX) { showError(ui.qaError, 'Questions are at most ' + QUESTION_MAX + ' characters.'); return; }
    if (!S.name) {
      // Questions are signed with the chat name: ask it in the chat tab.
      S.pendingText = null;
      selectTab(ui.tabChat);
      askName();
      showChatError('Please choose a name first, then ask your question.');
      return;
    }
    ui.qaSend.disabled = true;
    send({ t: 'ask', text: text }, {
      ok: function () {
        ui.qaSend.disabled = !qaState.open;
        ui.qaText.value = '';
        showError(ui.qaError, '');
        setStatus(ui.qaStatus, 'Thanks! Your question is in the list.');
      },
      error: function (x) {
        ui.qaSend.disabled = !qaState.open;
        if (x.code === 'no_name') { selectTab(ui.tabChat); askName(); }
        showError(ui.qaError, errorText(x.code, x.message));
      }
    });
  });
  ui.qaText.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (typeof ui.qaForm.requestSubmit === 'function') ui.qaForm.requestSubmit();
    }
  });

  // ───────────────────────────────────────────────────────────────── tabs ──
  function selectTab(tab) {
    [ui.tabChat, ui.tabQa].forEach(function (t) {
      var on = t === tab;
      t.setAttribute('aria-selected', on ? 'true' : 'false');
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    });
    tab.classList.remove('attention');
  }
  [ui.tabChat, ui.tabQa].forEach(function (t) {
    t.addEventListener('click', function () { selectTab(t); });
    t.addEventListener('keydown', function (e) {
      if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight' && e.key !== 'Home' && e.key !== 'End') return;
      var tabs = [ui.tabChat, ui.tabQa].filter(function (x) { return !x.hidden; });
      var i = tabs.indexOf(t);
      var n = e.key === 'Home' ? 0 : e.key === 'End' ? tabs.length - 1
        : (i + (e.key === 'ArrowRight' ? 1 : -1) + tabs.length) % tabs.length;
      selectTab(tabs[n]);
      tabs[n].focus();
      e.preventDefault();
    });
  });

  // ──────────────────────────────────────────────────────────── the loop ──
  function tick() {
    var now = serverNow();
    if (S.event) setPhase(computePhase(now));
    if (S.phase === 'lobby') renderCountdown(now);
    if (S.phase === 'live') {
      // Nobody is ahead of live, even after a local glitch.
      var live = livePos(now);
      if (!video.seeking && video.currentTime * 1000 > live + DRIFT_SEEK_MS && video.readyState >= 1) seekTo(live);
      if (!S.liveStarted && !S.behind) goLive(false);
      correctDrift();
    }
    var pos = position();
    renderCues(pos);
    if (Math.abs(pos - S.lastPos) > 0 || S.phase !== 'live') renderChat(false);
    S.lastPos = pos;
    renderControls();
  }

  setInterval(tick, CHECK_EVERY_MS);
  setInterval(function () {
    if ((S.phase === 'live' || S.phase === 'replay') && document.visibilityState !== 'hidden' && video.readyState >= 1) {
      send({ t: 'progress', pos: Math.round(position()), playing: !video.paused && !video.ended });
    }
  }, PROGRESS_EVERY_MS);

  // ─────────────────────────────────────────────────────────── for tests ──
  var api = {
    position: function () { return position(); },
    serverNow: function () { return serverNow(); },
    offset: function () { return clock.offset; },
    startsAt: function () { return S.startsAt; },
    phase: function () { return S.phase; }
  };
  Object.freeze(api);
  try {
    Object.defineProperty(window, 'volleyEvent', { value: api, writable: false, configurable: false, enumerable: true });
  } catch (e) { /* already defined */ }

  if (!EVENT_ID) {
    setConn('offline', 'No event was given.');
    return;
  }
  connect();
})();
