/*!
 * Volley chat widget (widget.js) — talks to a Volley server over WebSocket
 * (docs/protocol.md, version 1). Plain JavaScript, no dependencies, no build step.
 *
 * EMBEDDING
 *   <script src="https://volley.example/widget.js" data-flow="lead-qualification" async></script>
 *
 *   data-flow            (required) id of the flow to talk to
 *   data-mode            "bubble" (default: a launcher button bottom-right opens a panel)
 *                        or "inline" (rendered inside data-target, else right after the script)
 *   data-target          CSS selector of the element to render into (inline mode)
 *   data-open            "true": open the bubble at load
 *   data-title           panel title (default: the flow's assistant name)
 *   data-user-id         signed identity (see protocol.md "Identity"), together with
 *   data-user-signature  hex(HMAC-SHA256(site secret, user id)), computed on your server
 *   data-user-name       optional profile fields sent with the identity
 *   data-user-email
 *
 *   The server is the origin of this script's src (WebSocket at ws(s)://origin/ws).
 *
 * JAVASCRIPT API (the only global)
 *   const chat = window.Volley.mount({
 *     flow: "lead-qualification",     // required
 *     mode: "inline" | "bubble",       // default "bubble"
 *     target: "#chat" | element,       // inline mode (default: appended to <body>)
 *     open: false,                     // bubble: open at once
 *     title: "Talk to us",             // header title override
 *     userId, userSignature, userName, userEmail,   // signed identity
 *     server: "https://volley.example", // default: where widget.js was loaded from
 *     autofocus: false,                // focus the first question even before any interaction
 *     fill: false                      // inline: no outer border or rounded corners (full-page use)
 *   });
 *   chat.open(); chat.close(); chat.destroy();
 *   Several widgets on one page are independent.
 *
 * THEMING — CSS custom properties, set on :root, any ancestor or the <volley-chat> element:
 *   --volley-accent        brand colour: header, launcher, buttons, your bubbles (#1d4ed8)
 *   --volley-accent-text   text on the accent colour (#ffffff)
 *   --volley-bg            panel background (#ffffff)
 *   --volley-text          main text colour (#1f2937)
 *   --volley-muted         secondary text (#4b5563)
 *   --volley-bot-bubble    assistant bubble background (#f1f3f6)
 *   --volley-bot-text      assistant bubble text (= --volley-text)
 *   --volley-agent-bubble  a person's bubble after a hand-off (#e6f4ea)
 *   --volley-agent-text    a person's bubble text (= --volley-text)
 *   --volley-user-bubble   participant bubble background (= --volley-accent)
 *   --volley-user-text     participant bubble text (= --volley-accent-text)
 *   --volley-radius        corner radius of panel and bubbles (16px)
 *   --volley-font          font family (system UI stack)
 *   --volley-width         bubble panel width (380px); inline widgets fill their container
 *   --volley-height        panel height (600px bubble / 600px inline)
 *   --volley-border        input borders (#6b7280)
 *   --volley-focus         focus ring colour (= --volley-accent)
 *   --volley-z-index       stacking order in bubble mode (2147483000)
 *   The defaults meet WCAG 2.1 AA contrast; keep your own pairs at 4.5:1 or more.
 *
 * Only the contact token and the conversation id are stored (localStorage, per server
 * origin and flow); the conversation itself is always replayed from the server.
 */
(function () {
  'use strict';
  if (typeof window === 'undefined' || typeof document === 'undefined') return;

  var VERSION = '1.0.0';
  var SELF = document.currentScript;

  // Second copy of widget.js on the page: reuse the first one's API.
  if (window.Volley && typeof window.Volley._autoMount === 'function') {
    window.Volley._autoMount(SELF);
    return;
  }

  // ───────────────────────────────────────────────────────────── styles ──
  var CSS = [
    ':host{all:initial;display:block}',
    ':host([hidden]){display:none!important}',
    '*,*::before,*::after{box-sizing:border-box}',
    '[hidden]{display:none!important}',
    /* all:initial cuts every inherited property (letter-spacing, text-transform…) the host
       page may put on <volley-chat>; custom properties (--volley-*) still inherit. */
    '.root{all:initial;display:block;box-sizing:border-box;',
    '--accent:var(--volley-accent,#1d4ed8);',
    '--accent-text:var(--volley-accent-text,#fff);',
    '--bg:var(--volley-bg,#fff);',
    '--text:var(--volley-text,#1f2937);',
    '--muted:var(--volley-muted,#4b5563);',
    '--bot:var(--volley-bot-bubble,#f1f3f6);',
    '--bot-text:var(--volley-bot-text,var(--volley-text,#1f2937));',
    '--user:var(--volley-user-bubble,var(--volley-accent,#1d4ed8));',
    '--user-text:var(--volley-user-text,var(--volley-accent-text,#fff));',
    '--agent:var(--volley-agent-bubble,#e6f4ea);',
    '--agent-text:var(--volley-agent-text,var(--volley-text,#1f2937));',
    '--radius:var(--volley-radius,16px);',
    '--font:var(--volley-font,system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif,"Apple Color Emoji","Segoe UI Emoji","Noto Color Emoji");',
    '--width:var(--volley-width,380px);',
    '--height:var(--volley-height,600px);',
    '--border:var(--volley-border,#6b7280);',
    '--line:#e3e6ea;',
    '--line:color-mix(in srgb,var(--text) 12%,var(--bg));',
    '--tint:#eef2fd;',
    '--tint:color-mix(in srgb,var(--accent) 9%,var(--bg));',
    '--focus:var(--volley-focus,var(--volley-accent,#1d4ed8));',
    '--z:var(--volley-z-index,2147483000);',
    'font-family:var(--font);font-size:15px;line-height:1.45;color:var(--text);',
    'font-weight:400;text-align:left;-webkit-text-size-adjust:100%;text-size-adjust:100%;',
    '-webkit-font-smoothing:antialiased}',
    'button,input,textarea{font:inherit;color:inherit;letter-spacing:inherit}',
    'button{cursor:pointer}',
    'button:disabled{cursor:not-allowed}',
    ':focus{outline:none}',
    ':focus-visible{outline:3px solid var(--focus);outline-offset:2px}',
    '.sr{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap;border:0}',

    /* launcher */
    '.launcher{position:fixed;right:calc(20px + var(--slot,0) * 76px);bottom:20px;z-index:var(--z);width:60px;height:60px;border-radius:50%;border:0;',
    'background:var(--accent);color:var(--accent-text);display:grid;place-items:center;padding:0;',
    'box-shadow:0 6px 20px rgba(15,23,42,.28),0 2px 6px rgba(15,23,42,.16);transition:transform .15s ease}',
    '.launcher:hover{transform:scale(1.05)}',
    '.launcher:focus-visible{outline-offset:3px}',
    '.launcher svg{width:28px;height:28px}',
    '.launcher .i-close{display:none}',
    '.open .launcher .i-chat{display:none}',
    '.open .launcher .i-close{display:block}',
    '.badge{position:absolute;top:-2px;right:-2px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#b91c1c;color:#fff;',
    'font-size:12px;font-weight:700;line-height:22px;text-align:center;box-shadow:0 0 0 2px #fff}',

    /* panel */
    '.panel{display:flex;flex-direction:column;background:var(--bg);color:var(--text);overflow:hidden;border-radius:var(--radius)}',
    '.mode-inline .panel{position:relative;width:100%;height:var(--height);border:1px solid var(--line)}',
    '.mode-bubble .panel{position:fixed;right:20px;bottom:92px;z-index:var(--z);width:min(var(--width),calc(100vw - 40px));',
    'height:min(var(--height),calc(100vh - 116px));height:min(var(--height),calc(100dvh - 116px));',
    'box-shadow:0 16px 48px rgba(15,23,42,.22),0 3px 10px rgba(15,23,42,.12);',
    'visibility:hidden;opacity:0;transform:translateY(14px) scale(.98);transform-origin:bottom right;',
    'transition:opacity .18s ease,transform .18s ease,visibility 0s linear .18s}',
    '.mode-bubble.open .panel{visibility:visible;opacity:1;transform:none;transition-delay:0s}',
    '@media (max-width:480px){.mode-bubble .panel{top:0;left:0;right:0;bottom:0;width:auto;height:auto;border-radius:0}',
    '.mode-bubble.open .launcher{display:none}}',
    '.fill .panel{border-radius:0;border:0}',

    /* header */
    '.head{flex:none;display:flex;align-items:center;gap:10px;padding:12px 12px 12px 14px;background:var(--accent);color:var(--accent-text)}',
    '.avatar{flex:none;width:38px;height:38px;border-radius:50%;display:grid;place-items:center;font-weight:700;font-size:16px;',
    'background:rgba(255,255,255,.2);background:color-mix(in srgb,var(--accent-text) 20%,transparent)}',
    '.titles{flex:1;min-width:0}',
    '.name{font-weight:650;font-size:16px;line-height:1.25;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin:0}',
    '.sub{display:flex;flex-wrap:wrap;align-items:center;gap:3px 8px;font-size:12.5px;margin-top:3px;line-height:1.3}',
    '.label{display:inline-block;border:1px solid currentColor;border-radius:999px;padding:0 7px;font-weight:600;white-space:nowrap}',
    '.conn{display:inline-flex;align-items:center;gap:5px;white-space:nowrap}',
    '.conn::before{content:"";width:8px;height:8px;border-radius:50%;background:#facc15;box-shadow:0 0 0 1.5px rgba(255,255,255,.75)}',
    '.conn[data-state=connected]::before{background:#22c55e}',
    '.conn[data-state=offline]::before{background:#9ca3af}',
    '.iconbtn{flex:none;width:40px;height:40px;border:0;border-radius:10px;background:transparent;color:inherit;display:grid;place-items:center;padding:0}',
    '.iconbtn:hover{background:rgba(255,255,255,.16);background:color-mix(in srgb,var(--accent-text) 16%,transparent)}',
    '.iconbtn svg{width:22px;height:22px}',
    '.head :focus-visible{outline-color:var(--accent-text);outline-offset:0}',

    /* progress */
    '.progress{flex:none;height:4px;background:var(--tint)}',
    '.progress>span{display:block;height:100%;width:0;background:var(--accent);border-radius:0 2px 2px 0;transition:width .35s ease}',

    /* log */
    '.log{flex:1;min-height:0;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 12px;display:flex;flex-direction:column;gap:8px}',
    '.log:focus,.log:focus-visible{outline:none}',
    '.row{display:flex;flex-direction:column;align-items:flex-start;max-width:100%}',
    '.row.user{align-items:flex-end}',
    '.row+.row.user,.row.user+.row.bot{margin-top:6px}',
    '.bubble{max-width:86%;padding:9px 13px;border-radius:var(--radius);overflow-wrap:anywhere;word-break:normal}',
    '.bot .bubble{background:var(--bot);color:var(--bot-text);border-bottom-left-radius:6px}',
    '.user .bubble{background:var(--user);color:var(--user-text);border-bottom-right-radius:6px;white-space:pre-wrap}',
    '.user.action .bubble{background:var(--bg);color:var(--muted);border:1px dashed var(--border);font-style:italic}',
    '.user.sending .bubble{opacity:.88}',
    '.meta{font-size:12px;color:var(--muted);margin:3px 4px 0}',
    '.bot.invalid .bubble{background:#fff6e0;color:#1f2937;border:1px solid #eab54e;display:flex;gap:8px;align-items:flex-start}',
    '.warnicon{flex:none;width:20px;height:20px;border-radius:50%;background:#b45309;color:#fff;font-weight:800;font-size:13px;line-height:20px;text-align:center;margin-top:1px}',
    '.md{min-width:0}',
    '.md>:first-child{margin-top:0}.md>:last-child{margin-bottom:0}',
    '.md p{margin:0 0 .55em}',
    '.md ul,.md ol{margin:.3em 0 .55em;padding-left:1.35em}',
    '.md li{margin:.15em 0}',
    '.md blockquote{margin:.45em 0;padding:.15em .8em;border-left:3px solid var(--accent);color:inherit;font-style:italic}',
    '.md code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;background:rgba(0,0,0,.06);padding:.05em .3em;border-radius:4px}',
    '.md pre{white-space:pre-wrap;margin:.45em 0}',
    '.md a{color:var(--accent);text-decoration:underline;text-underline-offset:2px}',
    '.md strong{font-weight:650}',
    '.md img{max-width:100%;height:auto}',
    '.media{margin:-5px -9px 9px}',
    '.media:last-child{margin-bottom:-5px}',
    '.media img,.media video{display:block;width:100%;max-height:280px;object-fit:cover;border-radius:calc(var(--radius) - 5px);background:#e5e7eb}',
    '.bubble.hasmedia{width:86%;max-width:420px}',
    '.links{display:flex;flex-direction:column;gap:6px;margin-top:10px}',
    '.linkbtn{display:flex;align-items:center;justify-content:center;gap:6px;padding:8px 12px;min-height:40px;border-radius:10px;',
    'background:var(--bg);color:var(--accent);border:1.5px solid var(--accent);font-weight:600;text-decoration:none;text-align:center}',
    '.linkbtn:hover{background:var(--tint)}',
    '.linkbtn svg{flex:none;width:15px;height:15px}',
    '.note{align-self:center;max-width:92%;margin:6px 0;padding:4px 12px;border-radius:999px;font-size:12.5px;color:var(--muted);background:var(--tint);text-align:center}',
    /* a person from the team (after a hand-off) */
    '.agent .bubble{max-width:86%;background:var(--agent);color:var(--agent-text);border:1px solid #a7d7b5;border-bottom-left-radius:6px}',
    '.row.user+.row.agent{margin-top:6px}',
    '.who{font-size:12px;font-weight:650;color:var(--muted);margin:0 4px 3px}',
    '.agent.typing .who{margin:3px 4px 0}',
    '.csat{align-self:stretch;margin:6px 0;padding:12px;border:1px solid var(--line);border-radius:12px;background:var(--bg)}',
    '.csat .q{font-weight:600;margin:0 0 10px}',
    '.csat .scale{justify-content:flex-start}',
    '.csat .legend{margin-top:6px;max-width:234px}',
    '.csat .thanks{margin:0;color:var(--text)}',
    '.typing .bubble{display:inline-flex;gap:5px;align-items:center;padding:13px 15px}',
    '.typing .dot{width:7px;height:7px;border-radius:50%;background:var(--muted);opacity:.35;animation:vblink 1.2s infinite ease-in-out}',
    '.typing .dot:nth-child(2){animation-delay:.16s}.typing .dot:nth-child(3){animation-delay:.32s}',
    '@keyframes vblink{0%,80%,100%{opacity:.3;transform:translateY(0)}40%{opacity:1;transform:translateY(-3px)}}',
    '.row.enter{animation:vrise .22s ease-out}',
    '@keyframes vrise{from{opacity:0;transform:translateY(6px)}to{opacity:1;transform:none}}',

    /* answer card */
    '.card{display:flex;flex-direction:column;gap:8px;margin-top:4px;align-items:stretch}',
    '.opts{display:flex;flex-wrap:wrap;gap:8px;justify-content:flex-end}',
    '.opt{min-height:40px;padding:8px 15px;border-radius:999px;border:1.5px solid var(--accent);background:var(--bg);color:var(--accent);',
    'font-weight:550;text-align:left;max-width:100%;overflow-wrap:anywhere;display:inline-flex;align-items:center;gap:7px;line-height:1.3}',
    '.opt:not([aria-pressed=true]):not(:disabled):hover{background:var(--tint)}',
    '.opt[aria-pressed=true]{background:var(--accent);color:var(--accent-text)}',
    '.opt[aria-pressed=true]:hover{filter:brightness(1.1)}',
    '.opt:disabled{opacity:.45}',
    '.tick{flex:none;width:16px;height:16px;border-radius:4px;border:1.5px solid currentColor;display:grid;place-items:center}',
    '.tick svg{width:12px;height:12px;visibility:hidden}',
    '.opt[aria-pressed=true] .tick svg{visibility:visible}',
    '.btnrow{display:flex;justify-content:flex-end;align-items:center;gap:10px;flex-wrap:wrap}',
    '.btn{min-height:42px;padding:9px 18px;border-radius:10px;border:0;background:var(--accent);color:var(--accent-text);font-weight:650}',
    '.btn:hover:not(:disabled){filter:brightness(1.08)}',
    '.btn:disabled{opacity:.45}',
    '.btn.wide{width:100%}',
    '.cardhint{font-size:12.5px;color:var(--muted);text-align:right}',
    '.checks{display:flex;flex-direction:column;gap:8px;border:0;margin:0;padding:0;min-width:0}',
    '.check{display:flex;gap:10px;align-items:flex-start;padding:10px 12px;border:1.5px solid var(--line);border-radius:12px;background:var(--bg);cursor:pointer}',
    '.check:hover{border-color:var(--accent)}',
    '.check.on{border-color:var(--accent);background:var(--tint)}',
    '.check input{flex:none;width:20px;height:20px;margin:1px 0 0;accent-color:var(--accent);cursor:pointer}',
    '.check span{min-width:0;overflow-wrap:anywhere}',
    '.dates{display:flex;gap:10px;flex-wrap:wrap;justify-content:flex-end;align-items:flex-end}',
    '.field{display:flex;flex-direction:column;gap:4px;flex:1 1 160px;min-width:0}',
    '.field label{font-size:13px;color:var(--muted);font-weight:550}',
    '.date{min-height:44px;padding:8px 10px;border:1px solid var(--border);border-radius:10px;background:var(--bg);color:var(--text);width:100%;font-size:16px}',
    '.date:focus-visible{outline-offset:1px}',
    '.stars{display:flex;gap:2px;justify-content:flex-end;flex-wrap:wrap}',
    '.star{width:46px;height:46px;border:0;border-radius:10px;background:transparent;color:#7c8592;font-size:34px;line-height:1;padding:0;display:grid;place-items:center}',
    '.star.on{color:#b45309}',
    '.scale{display:flex;flex-wrap:wrap;gap:6px;justify-content:flex-end}',
    '.num{min-width:42px;height:42px;padding:0 6px;border-radius:10px;border:1.5px solid var(--accent);background:var(--bg);color:var(--accent);font-weight:650}',
    '.num:hover{background:var(--tint)}',
    '.num.on{background:var(--accent);color:var(--accent-text)}',
    '.legend{display:flex;justify-content:space-between;gap:10px;font-size:12px;color:var(--muted)}',

    /* footer */
    '.foot{flex:none;border-top:1px solid var(--line);padding:8px 10px 10px;background:var(--bg)}',
    '.nav{display:flex;justify-content:space-between;align-items:center;gap:8px;margin:-2px 0 6px}',
    '.textbtn{border:0;background:none;color:var(--accent);font-size:13.5px;font-weight:600;padding:4px 6px;border-radius:6px;display:inline-flex;align-items:center;gap:4px}',
    '.textbtn:hover{text-decoration:underline}',
    '.textbtn svg{width:14px;height:14px}',
    '.alert{font-size:13.5px;color:#991b1b;background:#fef2f2;border:1px solid #fca5a5;border-radius:10px;padding:7px 10px;margin:0 0 8px}',
    '.composer{display:flex;align-items:flex-end;gap:8px;margin:0}',
    '.input{flex:1;min-width:0;min-height:44px;max-height:132px;padding:10px 12px;border:1px solid var(--border);border-radius:12px;',
    'background:var(--bg);color:var(--text);font-size:16px;line-height:1.35;resize:none;display:block;width:100%}',
    'textarea.input{overflow-y:auto}',
    '.input::placeholder{color:#6b7280;opacity:1}',
    '.input:focus-visible{outline-width:2px;outline-offset:0;border-color:var(--focus)}',
    '.input:disabled{background:var(--tint);cursor:not-allowed}',
    '.send{flex:none;width:44px;height:44px;border-radius:12px;border:0;background:var(--accent);color:var(--accent-text);display:grid;place-items:center;padding:0}',
    '.send svg{width:20px;height:20px}',
    '.send:disabled{opacity:.4}',
    '.hint{font-size:12.5px;color:var(--muted);margin:5px 3px 0;min-height:1em}',
    '.hint:empty{display:none}',
    '.hint.warn{color:#a14a06}',

    '@media (prefers-reduced-motion:reduce){*,*::before,*::after{animation:none!important;transition:none!important;scroll-behavior:auto!important}.typing .dot{opacity:.75}}',
    '@media (forced-colors:active){.bubble,.opt,.num,.check,.btn,.send,.launcher{border:1px solid CanvasText}}'
  ].join('\n');

  // ─────────────────────────────────────────────────────────── helpers ──
  var SVGNS = 'http://www.w3.org/2000/svg';
  var ICONS = {
    chat: 'M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.6c-.5.4-1.3.1-1.3-.6V16.1A2.5 2.5 0 0 1 4 13.5Z',
    close: 'M6 6l12 12M18 6L6 18',
    send: 'M4 12l15-7-5 15-3-6zM11 14l8-9',
    back: 'M15 18l-6-6 6-6',
    skip: 'M9 6l6 6-6 6',
    ext: 'M14 4h6v6M20 4l-9 9M18 14v4a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h4',
    check: 'M5 12.5l4.5 4.5L19 7.5',
    restart: 'M4 12a8 8 0 1 0 2.3-5.7M4 4v4.5h4.5'
  };

  function icon(name, cls) {
    var s = document.createElementNS(SVGNS, 'svg');
    s.setAttribute('viewBox', '0 0 24 24');
    s.setAttribute('aria-hidden', 'true');
    s.setAttribute('focusable', 'false');
    if (cls) s.setAttribute('class', cls);
    var p = document.createElementNS(SVGNS, 'path');
    p.setAttribute('d', ICONS[name]);
    if (name === 'chat') {
      p.setAttribute('fill', 'currentColor');
    } else {
      p.setAttribute('fill', 'none');
      p.setAttribute('stroke', 'currentColor');
      p.setAttribute('stroke-width', name === 'close' ? '2.2' : '2');
      p.setAttribute('stroke-linecap', 'round');
      p.setAttribute('stroke-linejoin', 'round');
    }
    s.appendChild(p);
    return s;
  }

  /** Creates an element; `text` is always inserted as text, never as HTML. */
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  function uuid() {
    var c = window.crypto || window.msCrypto;
    try {
      if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    } catch (e) { /* insecure context */ }
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = '';
    for (var j = 0; j < 16; j++) {
      h += (b[j] + 0x100).toString(16).slice(1);
      if (j === 3 || j === 5 || j === 7 || j === 9) h += '-';
    }
    return h;
  }

  function truthy(v) {
    return v === true || v === '' || v === 'true' || v === '1' || v === 'yes' || v === 'open';
  }

  function utf8Length(s) {
    try { return new TextEncoder().encode(s).length; } catch (e) { return s.length * 3; }
  }

  function chars(s) { return Array.from(s).length; }

  /** Markdown source → plain text (checklist items are Markdown; shown as text). */
  function mdPlain(s) {
    return String(s == null ? '' : s)
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/(\*\*|__)(?=\S)([\s\S]*?\S)\1/g, '$2')
      .replace(/~~(?=\S)([\s\S]*?\S)~~/g, '$1')
      .replace(/\*(?=\S)([^*]*?\S)\*/g, '$1')
      .replace(/`([^`]+)`/g, '$1')
      .replace(/\\([\\`*_~[\]()#+\-.!>])/g, '$1');
  }

  /** A server message as a sentence: "you cannot…" → "You cannot…". */
  function sentence(msg) {
    var t = msg == null ? '' : String(msg).trim().slice(0, 300);
    return t ? t.charAt(0).toUpperCase() + t.slice(1) : '';
  }

  function fmtNum(n) {
    try { return Number(n).toLocaleString(); } catch (e) { return String(n); }
  }

  function fmtDate(iso) {
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(iso || ''));
    if (!m) return String(iso);
    try {
      return new Date(+m[1], +m[2] - 1, +m[3]).toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
    } catch (e) { return String(iso); }
  }

  function storageGet(key) {
    try { var v = window.localStorage.getItem(key); return v ? JSON.parse(v) : null; } catch (e) { return null; }
  }
  function storageSet(key, val) {
    try { window.localStorage.setItem(key, JSON.stringify(val)); } catch (e) { /* private mode */ }
  }

  var PERMANENT_ERRORS = { 'unknown-flow': 'This chat is not available.', 'invalid-identity': 'We could not confirm who you are. Please reload the page.' };
  var TEXT_TYPES = { text: 1, number: 1, email: 1, phone: 1, url: 1 };

  var scriptBase = (function () {
    var src = SELF && SELF.src;
    if (!src) {
      var s = document.querySelector('script[src*="widget.js"]');
      src = s && s.src;
    }
    try { return new URL(src || '/', location.href).origin; } catch (e) { return location.origin; }
  })();

  var sheetCache;
  function sharedSheet() {
    if (sheetCache !== undefined) return sheetCache;
    sheetCache = null;
    try {
      if ('adoptedStyleSheets' in Document.prototype && typeof CSSStyleSheet === 'function') {
        var sh = new CSSStyleSheet();
        sh.replaceSync(CSS);
        sheetCache = sh;
      }
    } catch (e) { sheetCache = null; }
    return sheetCache;
  }

  var instances = [];
  var bubbles = [];              // bubble widgets, in launcher order from the right
  function restack() {
    bubbles.forEach(function (w, i) { w.root.style.setProperty('--slot', String(i)); });
  }
  var focusWatchers = 0;
  var lastFocusHost = null;
  function onDocFocusIn(e) { lastFocusHost = e.target && e.target.tagName === 'VOLLEY-CHAT' ? e.target : null; }

  // ──────────────────────────────────────────────────────────── widget ──
  function Widget(opts) {
    var self = this;
    this.opts = opts;
    this.flow = String(opts.flow);
    this.mode = opts.mode === 'inline' ? 'inline' : 'bubble';
    var base = opts.server || scriptBase;
    try { this.base = new URL(base, location.href).origin; } catch (e) { this.base = location.origin; }
    this.wsUrl = this.base.replace(/^http/, 'ws') + '/ws';
    this.identity = null;
    if (opts.userId && opts.userSignature) {
      this.identity = { user_id: String(opts.userId), signature: String(opts.userSignature) };
      var profile = {};
      if (opts.userName) profile.name = String(opts.userName);
      if (opts.userEmail) profile.email = String(opts.userEmail);
      if (profile.name || profile.email) this.identity.profile = profile;
    }
    this.storeKey = 'volley:v1:' + this.base + ':' + this.flow + (this.identity ? ':u:' + this.identity.user_id : '');
    var saved = storageGet(this.storeKey) || {};
    this.token = typeof saved.token === 'string' ? saved.token : null;
    this.conversation = typeof saved.conversation === 'string' ? saved.conversation : null;

    this.ws = null;
    this.ready = false;          // welcome received on the current socket
    this.everConnected = false;
    this.failures = 0;
    this.fatal = null;
    this.destroyed = false;
    this.lastSeq = 0;
    this.ackedSeq = 0;
    this.sentLastSeq = 0;
    this.helloConversation = null;
    this.shownConversation = null;
    this.pending = new Map();    // client id → {id, frame, kind, step, bubble, askSeq, draft}
    this.awaiting = new Map();   // acked seq → bubble whose input event has not arrived yet
    this.renderedInputs = new Map(); // seq → participant row
    this.openAsk = null;
    this.asks = {};              // step → its latest ask (to display answers nicely)
    this.answeredAsk = null;     // seq of the ask answered locally (input in flight)
    this.ended = false;
    this.status = null;
    this.agentName = null;       // the person who has the conversation (after a hand-off)
    this.csat = null;            // the open rating prompt: {row, seq, scale, score, done}
    this.replaying = false;
    this.isOpen = this.mode === 'inline';
    this.unread = 0;
    this.assistant = { name: '', label: 'Automated assistant' };
    this.controlsKey = null;
    this.timers = {};
    this.listeners = [];

    this.build();
    this.attach();

    this.on(window, 'online', function () { self.updateConn(); if (self.started && !self.ws) self.reconnectNow(); });
    this.on(window, 'offline', function () { self.updateConn(); });
    this.on(window, 'storage', function (e) { if (e.key === self.storeKey) self.onStorage(e.newValue); });
    this.on(document, 'visibilitychange', function () {
      if (document.visibilityState !== 'visible') return;
      if (self.started && !self.ws && self.wanted()) self.reconnectNow();
      else if (self.ready) self.ping();
    });
    if (!focusWatchers++) document.addEventListener('focusin', onDocFocusIn, true);

    // Bubble widgets that never talked to anyone connect on first open.
    if (this.mode === 'inline' || this.conversation || opts.open) this.connect();
    if (opts.open) this.open();
  }

  var W = Widget.prototype;

  W.on = function (target, type, fn, opt) {
    target.addEventListener(type, fn, opt);
    this.listeners.push([target, type, fn, opt]);
  };

  W.wanted = function () { return !this.destroyed && !this.fatal; };

  // ── DOM ──
  W.build = function () {
    var self = this;
    var host = this.host = document.createElement('volley-chat');
    host.setAttribute('data-flow', this.flow);
    host.style.setProperty('display', 'block', 'important');
    var shadow = this.shadow = host.attachShadow({ mode: 'open' });
    // A constructed stylesheet also works under a Content-Security-Policy without
    // 'unsafe-inline' styles; older browsers get a <style> element.
    var sheet = sharedSheet();
    if (sheet) {
      shadow.adoptedStyleSheets = [sheet];
    } else {
      var style = el('style');
      style.textContent = CSS;
      shadow.appendChild(style);
    }

    var uid = 'v' + uuid().slice(0, 8);
    var root = this.root = el('div', 'root mode-' + this.mode + (this.opts.fill ? ' fill' : ''));
    shadow.appendChild(root);

    if (this.mode === 'bubble') {
      bubbles.push(this);
      restack();
      var launcher = this.launcher = el('button', 'launcher');
      launcher.type = 'button';
      launcher.setAttribute('aria-expanded', 'false');
      launcher.setAttribute('aria-controls', uid + '-panel');
      launcher.setAttribute('aria-label', 'Chat');
      launcher.appendChild(icon('chat', 'i-chat'));
      launcher.appendChild(icon('close', 'i-close'));
      this.badge = el('span', 'badge');
      this.badge.hidden = true;
      this.badge.setAttribute('aria-hidden', 'true');
      launcher.appendChild(this.badge);
      launcher.addEventListener('click', function () { if (self.isOpen) self.close(true); else self.open(); });
      root.appendChild(launcher);
    }

    var panel = this.panel = el('section', 'panel');
    panel.id = uid + '-panel';
    if (this.mode === 'bubble') {
      panel.setAttribute('role', 'dialog');
      panel.setAttribute('aria-modal', 'false');
    } else {
      panel.setAttribute('role', 'region');
    }
    panel.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && self.mode === 'bubble' && self.isOpen) {
        e.stopPropagation();
        self.close(true);
      }
    });
    root.appendChild(panel);

    // header
    var head = el('div', 'head');
    this.avatar = el('div', 'avatar');
    this.avatar.setAttribute('aria-hidden', 'true');
    var titles = el('div', 'titles');
    this.nameEl = el('div', 'name');
    var sub = el('div', 'sub');
    this.labelEl = el('span', 'label', this.assistant.label);
    this.connEl = el('span', 'conn');
    this.connEl.setAttribute('data-state', 'connecting');
    sub.appendChild(this.labelEl);
    sub.appendChild(this.connEl);
    titles.appendChild(this.nameEl);
    titles.appendChild(sub);
    head.appendChild(this.avatar);
    head.appendChild(titles);
    if (this.mode === 'bubble') {
      var closeBtn = el('button', 'iconbtn');
      closeBtn.type = 'button';
      closeBtn.setAttribute('aria-label', 'Close chat');
      closeBtn.appendChild(icon('close'));
      closeBtn.addEventListener('click', function () { self.close(true); });
      head.appendChild(closeBtn);
    }
    panel.appendChild(head);

    // progress
    this.progress = el('div', 'progress');
    this.progress.setAttribute('role', 'progressbar');
    this.progress.setAttribute('aria-label', 'Progress');
    this.progress.setAttribute('aria-valuemin', '0');
    this.progress.setAttribute('aria-valuemax', '100');
    this.progressBar = el('span');
    this.progress.appendChild(this.progressBar);
    this.progress.hidden = true;
    panel.appendChild(this.progress);

    // conversation log (announcements go through the live region, not the log)
    var log = this.log = el('div', 'log');
    log.tabIndex = -1;
    log.setAttribute('aria-label', 'Conversation');
    log.setAttribute('role', 'group');
    this.typingRow = el('div', 'row bot typing');
    var tb = el('div', 'bubble');
    tb.setAttribute('aria-hidden', 'true');
    tb.appendChild(el('span', 'dot'));
    tb.appendChild(el('span', 'dot'));
    tb.appendChild(el('span', 'dot'));
    this.typingRow.appendChild(tb);
    this.typingText = el('span', 'sr');
    this.typingRow.appendChild(this.typingText);
    this.typingRow.hidden = true;
    // A person typing (after a hand-off): their name is shown, not only announced.
    this.agentTypingRow = el('div', 'row agent typing');
    var ab = el('div', 'bubble');
    ab.setAttribute('aria-hidden', 'true');
    ab.appendChild(el('span', 'dot'));
    ab.appendChild(el('span', 'dot'));
    ab.appendChild(el('span', 'dot'));
    this.agentTypingRow.appendChild(ab);
    this.agentTypingText = el('div', 'who');
    this.agentTypingRow.appendChild(this.agentTypingText);
    this.agentTypingRow.hidden = true;
    log.appendChild(this.agentTypingRow);
    log.appendChild(this.typingRow);
    this.card = el('div', 'card');
    this.card.hidden = true;
    log.appendChild(this.card);
    panel.appendChild(log);

    // footer
    var foot = el('div', 'foot');
    this.alertEl = el('div', 'alert');
    this.alertEl.setAttribute('role', 'alert');
    this.alertEl.hidden = true;
    foot.appendChild(this.alertEl);
    this.nav = el('div', 'nav');
    this.backBtn = el('button', 'textbtn');
    this.backBtn.type = 'button';
    this.backBtn.appendChild(icon('back'));
    this.backBtn.appendChild(el('span', null, 'Back'));
    this.backBtn.setAttribute('aria-label', 'Back to the previous question');
    this.backBtn.addEventListener('click', function () { self.sendBack(); });
    this.skipBtn = el('button', 'textbtn');
    this.skipBtn.type = 'button';
    this.skipBtn.appendChild(el('span', null, 'Skip'));
    this.skipBtn.appendChild(icon('skip'));
    this.skipBtn.setAttribute('aria-label', 'Skip this question');
    this.skipBtn.addEventListener('click', function () { self.sendSkip(); });
    this.nav.appendChild(this.backBtn);
    this.nav.appendChild(el('span'));
    this.nav.appendChild(this.skipBtn);
    this.nav.hidden = true;
    foot.appendChild(this.nav);

    var form = this.form = el('form', 'composer');
    form.setAttribute('novalidate', '');
    form.addEventListener('submit', function (e) { e.preventDefault(); self.submitComposer(); });
    this.fieldWrap = el('div');
    this.fieldWrap.style.cssText = 'flex:1;min-width:0';
    form.appendChild(this.fieldWrap);
    this.sendBtn = el('button', 'send');
    this.sendBtn.type = 'submit';
    this.sendBtn.setAttribute('aria-label', 'Send');
    this.sendBtn.appendChild(icon('send'));
    form.appendChild(this.sendBtn);
    foot.appendChild(form);
    this.hintEl = el('div', 'hint');
    this.hintEl.id = uid + '-hint';
    foot.appendChild(this.hintEl);
    this.restartBtn = el('button', 'btn wide');
    this.restartBtn.type = 'button';
    this.restartBtn.textContent = 'Start again';
    this.restartBtn.hidden = true;
    this.restartBtn.addEventListener('click', function () { self.sendRestart(); });
    foot.appendChild(this.restartBtn);
    panel.appendChild(foot);

    this.live = el('div', 'sr');
    this.live.setAttribute('aria-live', 'polite');
    this.live.setAttribute('aria-atomic', 'false');
    this.live.setAttribute('role', 'status');
    panel.appendChild(this.live);

    // Focus bookkeeping: we only move focus when the participant is using the widget.
    panel.addEventListener('focusin', function () { self.engaged = true; });
    panel.addEventListener('pointerdown', function () { self.engaged = true; });

    this.uid = uid;
    this.updateHeader();
    this.updateConn();
    this.renderControls(true);
  };

  W.attach = function () {
    var o = this.opts;
    var host = this.host;
    if (this.mode === 'inline') {
      var target = o.target;
      if (typeof target === 'string') target = document.querySelector(target);
      if (target && target.nodeType === 1) {
        target.appendChild(host);
      } else if (o.after && o.after.parentNode && document.body && document.body.contains(o.after)) {
        o.after.parentNode.insertBefore(host, o.after.nextSibling);
      } else {
        document.body.appendChild(host);
      }
    } else {
      document.body.appendChild(host);
    }
  };

  W.updateHeader = function () {
    var known = this.opts.title || this.assistant.name;
    var name = known || 'Chat';
    this.nameEl.textContent = name;
    this.avatar.textContent = (Array.from((this.assistant.name || name).trim())[0] || '?').toUpperCase();
    // Honest labelling: while a person has the conversation, the header says so.
    var who = this.withPerson() && this.agentName ? 'Person: ' + this.agentName : (this.assistant.label || 'Automated assistant');
    this.labelEl.textContent = who;
    var label = name + ' (' + who + ')';
    this.panel.setAttribute('aria-label', label);
    if (this.launcher) {
      var unread = this.unread ? ', ' + this.unread + ' new message' + (this.unread > 1 ? 's' : '') : '';
      // Until the first connection names the assistant, the launcher just says what it does.
      this.launcher.setAttribute('aria-label', (known ? 'Chat with ' + known : 'Open chat') + unread);
    }
    this.typingText.textContent = (this.assistant.name || 'The assistant') + ' is typing…';
  };

  W.connState = function () {
    if (this.fatal) return 'offline';
    if (typeof navigator !== 'undefined' && navigator.onLine === false) return 'offline';
    if (this.ready) return 'connected';
    if (!this.ws && !this.timers.reconnect) return this.everConnected ? 'offline' : 'connecting';
    if (this.everConnected) return 'reconnecting';
    return this.failures >= 4 ? 'offline' : 'connecting';
  };

  W.updateConn = function () {
    var st = this.connState();
    var text = { connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…', offline: 'Offline' }[st];
    if (st === 'offline' && !this.fatal && this.wanted() && this.ws === null && this.timers.reconnect) text = 'Offline · retrying';
    this.connEl.textContent = text;
    this.connEl.setAttribute('data-state', st);
    if (this.prevConn && this.prevConn !== st) {
      if (st === 'reconnecting' && this.prevConn === 'connected') this.announce('Connection lost. Reconnecting…');
      else if (st === 'connected' && this.prevConn === 'reconnecting') this.announce('Reconnected.');
    }
    this.prevConn = st;
  };

  // ── connection ──
  W.connect = function () {
    var self = this;
    if (!this.wanted() || this.ws) return;
    this.started = true;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    var ws;
    try {
      ws = new WebSocket(this.wsUrl);
    } catch (e) {
      this.failures++;
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.ready = false;
    this.updateConn();
    ws.onopen = function () {
      if (ws !== self.ws) return;
      self.sendHello();
      clearTimeout(self.timers.hello);
      self.timers.hello = setTimeout(function () { if (ws === self.ws && !self.ready) self.drop(); }, 10000);
    };
    ws.onmessage = function (e) {
      if (ws !== self.ws) return;
      self.lastFrameAt = Date.now();
      var m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m && typeof m === 'object') self.onFrame(m);
    };
    ws.onclose = function () {
      if (ws !== self.ws) return;
      self.ws = null;
      self.lostSocket();
    };
    ws.onerror = function () { /* a close event follows */ };
  };

  /** Closes a socket we no longer use (a connecting one once it opens: closing it
   *  earlier makes browsers log a warning). */
  function closeSocket(ws) {
    ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws.readyState === 0) {
      ws.onopen = function () { try { ws.close(); } catch (e) { /* ignore */ } };
    } else {
      ws.onopen = null;
      try { ws.close(); } catch (e) { /* ignore */ }
    }
  }

  /** Abandons the current socket at once (dead or to be replaced) and reconnects. */
  W.drop = function (immediately) {
    var ws = this.ws;
    if (!ws) return;
    this.ws = null;
    closeSocket(ws);
    this.lostSocket(immediately);
  };

  W.lostSocket = function (immediately) {
    var wasReady = this.ready;
    this.ready = false;
    clearTimeout(this.timers.hello);
    clearInterval(this.timers.ping);
    clearInterval(this.timers.retry);
    clearTimeout(this.timers.pong);
    this.showTyping(false);
    this.showAgentTyping(false);
    if (!wasReady) this.failures++;
    if (!this.wanted()) { this.updateConn(); return; }
    if (immediately) { this.failures = 0; this.timers.reconnect = setTimeout(this.connect.bind(this), 0); this.updateConn(); return; }
    this.scheduleReconnect();
  };

  W.scheduleReconnect = function () {
    if (!this.wanted()) return;
    clearTimeout(this.timers.reconnect);
    var n = Math.max(0, this.failures - 1);
    var base = Math.min(30000, 500 * Math.pow(2, n));
    var delay = Math.min(30000, base * (0.75 + Math.random() * 0.5));
    this.timers.reconnect = setTimeout(this.connect.bind(this), delay);
    this.updateConn();
  };

  W.reconnectNow = function () {
    if (!this.wanted()) return;
    if (this.ws) { this.drop(true); return; }
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this.failures = 0;
    this.connect();
  };

  W.sendRaw = function (frame) {
    var ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); return true; } catch (e) { return false; }
  };

  W.sendHello = function () {
    var h = { type: 'hello', v: 1, flow: this.flow, last_seq: this.lastSeq };
    if (this.token) h.token = this.token;
    if (this.identity) h.identity = this.identity;
    var conv = this.shownConversation || this.conversation;
    if (conv) h.conversation = conv;
    try { var tz = Intl.DateTimeFormat().resolvedOptions().timeZone; if (tz) h.timezone = tz; } catch (e) { /* none */ }
    if (navigator.language) h.locale = navigator.language;
    this.helloConversation = conv || null;
    this.sentLastSeq = this.lastSeq;
    this.sendRaw(h);
  };

  W.ping = function () {
    var self = this;
    if (!this.ready) return;
    var sentAt = Date.now();
    this.sendRaw({ type: 'ping', t: sentAt });
    clearTimeout(this.timers.pong);
    this.timers.pong = setTimeout(function () {
      if (self.ready && (self.lastFrameAt || 0) < sentAt) self.drop();
    }, 10000);
  };

  // ── frames ──
  W.onFrame = function (m) {
    switch (m.type) {
      case 'welcome': this.onWelcome(m); break;
      case 'event': this.onEvent(m); break;
      case 'typing':
        if (m.from === 'agent') this.showAgentTyping(!!m.on, m.agent);
        else if (m.on) { this.endReplay(); this.showTyping(true); } else this.showTyping(false);
        break;
      case 'queue':
        // The place in line moved (not logged): the latest notice says it now.
        if (this.queueNote && typeof m.text === 'string') {
          this.queueNote.textContent = m.text;
          this.announce(m.text);
        }
        break;
      case 'ack': this.onAck(m); break;
      case 'error': this.onError(m); break;
      default: break; // pong and anything newer
    }
  };

  W.onWelcome = function (m) {
    var self = this;
    clearTimeout(this.timers.hello);
    var conv = typeof m.conversation === 'string' ? m.conversation : null;
    if (m.token) this.token = String(m.token);

    // The server opened a different conversation than the one whose events we hold.
    var restarted = false;
    if (conv && this.shownConversation && conv !== this.shownConversation) {
      restarted = this.restartAcked || this.hasPending('restart');
      this.resetView();
      this.conversation = conv;
      this.save();
      if (!restarted && this.sentLastSeq > 0) {
        // We asked for events after N of another conversation: ask again for all of it.
        this.drop(true);
        return;
      }
    }
    this.restartAcked = false;

    this.ready = true;
    this.everConnected = true;
    this.failures = 0;
    this.conversation = conv;
    this.shownConversation = conv;
    this.save();
    var f = m.flow || {};
    var a = f.assistant || {};
    this.assistant = {
      name: a.name || f.title || '',
      label: a.label || 'Automated assistant'
    };
    this.updateHeader();
    this.setStatus(m.status || 'active');
    if (this.status === 'ended' && !this.openAsk) this.ended = true;
    var serverLast = typeof m.last_seq === 'number' ? m.last_seq : 0;
    this.welcomeLastSeq = serverLast;
    // Replaying the history of a resumed conversation (page load): no animation, no
    // announcements. A new conversation, or events missed while reconnecting, are live.
    if (serverLast > this.lastSeq && this.lastSeq === 0 && this.helloConversation && !restarted) {
      this.replaying = true;
      this.bumpReplayTimer();
    }
    this.updateConn();
    // Inputs sent while we were away: same ids, so the server applies each once.
    this.pending.forEach(function (p) {
      if (p.kind === 'restart' && self.restartJustWelcomed(conv, p)) return;
      p.sentAt = Date.now();
      self.sendRaw(p.frame);
    });
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(function () { self.ping(); }, 30000);
    // An input neither acknowledged nor refused (e.g. dropped by the rate limiter) is
    // sent again with its id; the server applies it once.
    clearInterval(this.timers.retry);
    this.timers.retry = setInterval(function () {
      if (!self.ready) return;
      var now = Date.now();
      self.pending.forEach(function (p) {
        if (now - (p.sentAt || 0) > 6000) { p.sentAt = now; self.sendRaw(p.frame); }
      });
    }, 2000);
    this.renderControls();
    this.scheduleAck();
  };

  /** A welcome for a new conversation answers our restart: it is done. */
  W.restartJustWelcomed = function (conv, p) {
    if (p.conversation && conv && conv !== p.conversation) { this.pending.delete(p.id); return true; }
    return false;
  };

  W.hasPending = function (kind) {
    var found = false;
    this.pending.forEach(function (p) { if (p.kind === kind) found = true; });
    return found;
  };

  W.bumpReplayTimer = function () {
    var self = this;
    clearTimeout(this.timers.replay);
    this.timers.replay = setTimeout(function () { self.endReplay(); }, 400);
  };

  W.endReplay = function () {
    if (!this.replaying) return;
    this.replaying = false;
    clearTimeout(this.timers.replay);
    this.scrollToEnd(true);
    this.renderControls();
  };

  W.onEvent = function (m) {
    var seq = m.seq;
    if (typeof seq !== 'number' || seq <= this.lastSeq) return; // duplicate or stale
    this.lastSeq = seq;
    var ev = m.event || {};
    var live = !this.replaying;
    switch (ev.kind) {
      case 'message':
        if (ev.from === 'agent') {
          this.showAgentTyping(false);
          this.setStatus('human');
          if (ev.agent) this.setAgent(String(ev.agent));
        } else {
          this.showTyping(false);
          this.handedBack();
        }
        this.renderMessage(ev, seq, live);
        break;
      case 'ask':
        this.openAsk = Object.assign({}, ev, { seq: seq });
        if (ev.step) this.asks[ev.step] = this.openAsk;
        this.ended = false;
        this.handedBack();
        this.setProgress(ev.progress);
        break;
      case 'input':
        this.renderInput(ev, seq, live);
        if (this.openAsk && seq > this.openAsk.seq) this.openAsk = null;
        if (this.answeredAsk != null && seq > this.answeredAsk) this.answeredAsk = null;
        break;
      case 'handoff':
        this.showTyping(false);
        this.addNote('A person from the team will continue this conversation here.', live);
        this.openAsk = null;
        this.setAgent(null);
        this.setStatus('human');
        break;
      case 'queue':
        // Where the participant stands, in the server's words (position, expected
        // wait, or when a closed team will reply).
        this.setStatus('human');
        this.queueNote = this.addNote(ev.text ? String(ev.text) : 'A person will reply here as soon as someone is available.', live);
        break;
      case 'assigned':
        this.queueNote = null;
        this.setStatus('human');
        this.setAgent(ev.agent ? String(ev.agent) : null);
        this.addNote((ev.agent ? String(ev.agent) : 'A person from the team') + ' joined the conversation', live);
        break;
      case 'csat_request':
        this.showAgentTyping(false);
        this.renderCsat(ev, seq, live);
        break;
      case 'csat':
        this.csatDone(ev.score);
        break;
      case 'http':
        // The assistant is looking something up: it is "typing" until the next event.
        this.openAsk = null;
        this.handedBack();
        if (live) this.showTyping(true);
        break;
      case 'wait':
        this.showTyping(false);
        this.handedBack();
        this.addNote(this.waitText(ev.until), live);
        break;
      case 'end':
        this.showTyping(false);
        this.showAgentTyping(false);
        this.openAsk = null;
        this.ended = true;
        this.setStatus('ended');
        this.setProgress(1);
        this.addNote('This conversation has ended.', live);
        break;
      default:
        break;
    }
    if (this.replaying) {
      if (seq >= this.welcomeLastSeq) this.endReplay();
      else this.bumpReplayTimer();
    }
    this.renderControls();
    this.scheduleAck();
  };

  W.waitText = function (until) {
    var d = until ? new Date(until) : null;
    if (!d || isNaN(d.getTime())) return 'The conversation will continue later.';
    var s;
    try { s = d.toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: 'numeric', minute: '2-digit' }); } catch (e) { s = d.toString(); }
    return 'The conversation will continue on ' + s + '.';
  };

  W.onAck = function (m) {
    var p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (p.kind === 'restart') { this.restartAcked = true; return; }
    var seq = m.seq;
    if (!p.bubble) return; // its event already took the bubble over
    if (typeof seq === 'number' && this.renderedInputs.has(seq)) {
      // The event was shown on its own: drop our optimistic copy.
      if (this.renderedInputs.get(seq) !== p.bubble) p.bubble.remove();
      return;
    }
    this.markSent(p.bubble);
    if (typeof seq === 'number') {
      if (seq > this.lastSeq) this.awaiting.set(seq, p.bubble);
      else this.renderedInputs.set(seq, p.bubble);
    }
  };

  W.onError = function (m) {
    var code = m.code || '';
    var p = m.id ? this.pending.get(m.id) : null;
    if (p) {
      this.pending.delete(m.id);
      if (p.bubble) p.bubble.remove();
      if (p.askSeq != null && this.answeredAsk === p.askSeq) {
        this.answeredAsk = null;
        this.restoreDraft = p.draft || null;
      }
      if (p.kind === 'restart') this.restartBtn.disabled = false;
      if (p.kind === 'say' && p.draft && this.field && this.fieldHuman && !this.field.value) {
        this.field.value = p.draft.text; // give the refused message back to edit
      }
      if (p.kind === 'rate' && this.csat) {
        var c = this.csat;
        if (code === 'rated' || code === 'no-rating-asked') {
          // Rated already (another tab), or nothing to rate any more: no error to show.
          c.done = true;
          c.closed = code === 'no-rating-asked';
          c.score = null; // a rating made elsewhere arrives as its own `csat` event
          this.renderCsatBody(c);
          return;
        }
        c.score = null; // offer the buttons again
        this.renderCsatBody(c);
      }
    }
    if (PERMANENT_ERRORS[code] && !this.ready) {
      this.fatal = code;
      this.showAlert(PERMANENT_ERRORS[code]);
      this.drop();
      this.updateConn();
      this.renderControls(true);
      return;
    }
    switch (code) {
      case 'stale-question':
        break; // the log already moved on (another tab, or a late click): nothing to show
      case 'ended':
        this.ended = true;
        this.openAsk = null;
        break;
      case 'unknown-conversation':
        this.conversation = null;
        this.resetView();
        this.save();
        if (!this.ready) this.drop(true);
        break;
      case 'unauthorized':
        if (!this.ready) {
          this.token = null;
          this.conversation = null;
          this.resetView();
          this.save();
          this.drop(true);
        }
        break;
      case 'unavailable':
        if (!this.ready) this.drop();
        else if (p) this.showAlert('The server is busy. Please try again in a moment.');
        break;
      case 'rate-limited':
        // Refused frames carry no id: pending inputs are re-sent by the retry timer.
        if (p || this.pending.size) this.showAlert('You are sending messages too quickly. Retrying in a moment…');
        break;
      case 'too-large':
        this.showAlert('That message is too long. Please shorten it.');
        break;
      case 'with-human':
        this.showAlert('A person is handling this conversation now. Please wait for their reply.');
        break;
      case 'invalid-input':
        this.showAlert(sentence(m.message) || 'That is not possible right now.');
        break;
      default:
        if (p) this.showAlert(sentence(m.message) || 'Something went wrong. Please try again.');
        break;
    }
    this.renderControls(!!p);
  };

  W.onStorage = function (raw) {
    var v = null;
    try { v = raw ? JSON.parse(raw) : null; } catch (e) { v = null; }
    if (!v) return;
    if (typeof v.token === 'string' && !this.token) this.token = v.token;
    if (typeof v.conversation === 'string' && v.conversation !== this.conversation) {
      // Another tab restarted or began a conversation: follow it.
      this.conversation = v.conversation;
      if (this.started && this.shownConversation && this.shownConversation !== v.conversation) {
        this.resetView();
        if (this.ws || this.ready) this.drop(true);
        else this.reconnectNow();
      }
    }
  };

  W.save = function () {
    var v = {};
    if (this.token) v.token = this.token;
    if (this.conversation) v.conversation = this.conversation;
    storageSet(this.storeKey, v);
  };

  W.resetView = function () {
    this.queueNote = null;
    var keep = [this.agentTypingRow, this.typingRow, this.card];
    var kids = Array.prototype.slice.call(this.log.children);
    for (var i = 0; i < kids.length; i++) if (keep.indexOf(kids[i]) < 0) kids[i].remove();
    var self = this;
    this.pending.forEach(function (p, id) { if (p.kind !== 'restart') self.pending.delete(id); });
    this.awaiting.clear();
    this.renderedInputs.clear();
    this.asks = {};
    this.lastSeq = 0;
    this.ackedSeq = 0;
    this.openAsk = null;
    this.answeredAsk = null;
    this.ended = false;
    this.csat = null;
    this.agentName = null;
    this.shownConversation = null;
    this.progress.hidden = true;
    this.progressBar.style.width = '0';
    this.hideAlert();
    this.showTyping(false);
    this.showAgentTyping(false);
    this.renderControls(true);
  };

  // ── acks ──
  W.scheduleAck = function () {
    var self = this;
    if (this.lastSeq <= this.ackedSeq) return;
    clearTimeout(this.timers.ack);
    this.timers.ack = setTimeout(function () {
      if (!self.ready || !self.isOpen) return; // shown means visible: acked on open
      if (self.lastSeq > self.ackedSeq && self.sendRaw({ type: 'ack', seq: self.lastSeq })) self.ackedSeq = self.lastSeq;
    }, 350);
  };

  // ── rendering the log ──
  W.nearBottom = function () {
    var l = this.log;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  };

  W.scrollToEnd = function (force) {
    var l = this.log;
    if (force || this.nearBottom()) l.scrollTop = l.scrollHeight;
  };

  W.append = function (row, live) {
    var stick = this.nearBottom() || this.replaying;
    if (live) row.classList.add('enter');
    this.log.insertBefore(row, this.agentTypingRow);
    if (stick) this.log.scrollTop = this.log.scrollHeight;
  };

  W.safeUrl = function (u, allowOther) {
    if (typeof u !== 'string' || !u) return null;
    var url;
    try { url = new URL(u, this.base + '/'); } catch (e) { return null; }
    var ok = url.protocol === 'https:' || url.protocol === 'http:' ||
      (allowOther && (url.protocol === 'mailto:' || url.protocol === 'tel:'));
    return ok ? url.href : null;
  };

  W.renderMessage = function (ev, seq, live) {
    var self = this;
    // A person's message (after a hand-off): labelled with their name, never as automated.
    var agent = ev.from === 'agent' ? String(ev.agent || 'A person from the team') : null;
    var row = el('div', agent ? 'row agent' : 'row bot' + (ev.invalid ? ' invalid' : ''));
    row.setAttribute('data-seq', String(seq));
    if (agent) row.appendChild(el('div', 'who', agent));
    var bubble = el('div', 'bubble');
    var content = bubble;
    if (ev.invalid) {
      var ic = el('span', 'warnicon', '!');
      ic.setAttribute('aria-hidden', 'true');
      bubble.appendChild(ic);
      content = el('div', 'md');
      content.style.flex = '1';
      bubble.appendChild(content);
    }
    var imgSrc = this.safeUrl(ev.image);
    var vidSrc = this.safeUrl(ev.video);
    if (imgSrc || vidSrc) {
      bubble.classList.add('hasmedia');
      var media = el('div', 'media');
      if (imgSrc) {
        var img = el('img');
        img.alt = ev.alt ? String(ev.alt) : '';
        img.loading = 'lazy';
        img.decoding = 'async';
        img.addEventListener('load', function () {
          // Keep following the conversation if we were at the bottom before the image grew.
          var l = self.log;
          if (l.scrollHeight - l.scrollTop - l.clientHeight < 80 + img.offsetHeight) l.scrollTop = l.scrollHeight;
        });
        img.src = imgSrc;
        media.appendChild(img);
      }
      if (vidSrc) {
        var vid = el('video');
        vid.controls = true;
        vid.preload = 'metadata';
        vid.setAttribute('playsinline', '');
        if (ev.alt) vid.setAttribute('aria-label', String(ev.alt));
        vid.src = vidSrc;
        media.appendChild(vid);
      }
      content.appendChild(media);
    }
    var body = null;
    if (typeof ev.html === 'string' && ev.html) {
      body = el('div', 'md');
      body.innerHTML = ev.html; // sanitised by the server (safe Markdown)
      var links = body.querySelectorAll('a[href]');
      for (var i = 0; i < links.length; i++) {
        links[i].target = '_blank';
        links[i].rel = 'noopener noreferrer';
      }
    } else if (ev.text) {
      body = el('div', 'md', ev.text);
      body.style.whiteSpace = 'pre-wrap';
    }
    if (body) content.appendChild(body);
    var linkList = Array.isArray(ev.links) ? ev.links : [];
    if (linkList.length) {
      var wrap = el('div', 'links');
      linkList.forEach(function (l) {
        var href = self.safeUrl(l && l.url, true);
        if (!href) return;
        var a = el('a', 'linkbtn');
        a.href = href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        a.appendChild(el('span', null, l.label || href));
        a.appendChild(icon('ext'));
        a.appendChild(el('span', 'sr', ' (opens in a new tab)'));
        wrap.appendChild(a);
      });
      if (wrap.childNodes.length) content.appendChild(wrap);
    }
    row.appendChild(bubble);
    this.append(row, live);
    if (live) {
      var said = (body ? body.textContent : '') || (ev.alt ? String(ev.alt) : '');
      var speaker = agent || (ev.invalid ? '' : this.assistant.name);
      if (said) this.announce((speaker ? speaker + ': ' : '') + said.trim().slice(0, 600));
      if (!this.isOpen) { this.unread++; this.updateBadge(); }
    }
  };

  W.inputLabel = function (ev) {
    if (ev.label != null && ev.label !== '') return String(ev.label);
    if (ev.action === 'back') return 'Back';
    if (ev.action === 'skip') return 'Skipped';
    if (ev.text != null) return String(ev.text);
    if (Array.isArray(ev.values)) return ev.values.join(', ');
    return '';
  };

  W.userRow = function (label, action, step) {
    var row = el('div', 'row user' + (action ? ' action' : ''));
    row.appendChild(el('div', 'bubble'));
    this.setUserLabel(row, label, step);
    return row;
  };

  /** Writes a participant's answer into its bubble (as text), nicer for ratings and dates. */
  W.setUserLabel = function (row, label, step) {
    var bubble = row.firstChild;
    while (bubble.firstChild) bubble.removeChild(bubble.firstChild);
    var ask = step ? this.asks[step] : null;
    var text = String(label == null ? '' : label);
    var iso = /^\d{4}-\d{2}-\d{2}$/;
    if (ask && ask.input === 'rating' && ask.style !== 'numbers' && /^\d{1,2}$/.test(text)) {
      var n = +text;
      var hi = ask.scale || 5;
      if (n >= 1 && n <= hi) {
        var vis = el('span', null, new Array(n + 1).join('★') + new Array(hi - n + 1).join('☆'));
        vis.setAttribute('aria-hidden', 'true');
        vis.style.letterSpacing = '2px';
        bubble.appendChild(vis);
        bubble.appendChild(el('span', 'sr', n + ' out of ' + hi + ' stars'));
        return;
      }
    }
    if (ask && ask.input === 'date' && iso.test(text)) text = fmtDate(text);
    if (ask && ask.input === 'date_range') {
      var parts = text.split(' – ');
      if (parts.length === 2 && iso.test(parts[0]) && iso.test(parts[1])) text = fmtDate(parts[0]) + ' – ' + fmtDate(parts[1]);
    }
    bubble.textContent = text;
  };

  W.markSent = function (row) {
    row.classList.remove('sending');
    var meta = row.querySelector('.meta');
    if (meta) meta.remove();
  };

  W.renderInput = function (ev, seq, live) {
    var label = this.inputLabel(ev);
    var row = this.awaiting.get(seq);
    if (row) {
      this.awaiting.delete(seq);
    } else {
      // An input still in flight for this step (the event beat its ack): take it over.
      var self = this;
      this.pending.forEach(function (p) {
        if (row || !p.bubble || p.kind === 'restart') return;
        var same = ev.action ? p.kind === ev.action
          : ev.to === 'human' ? p.kind === 'say'
          : (p.kind === 'answer' && p.step === ev.step);
        if (same) { row = p.bubble; p.bubble = null; self.markSent(row); }
      });
    }
    if (row) {
      this.setUserLabel(row, label, ev.step);
      row.classList.toggle('action', !!ev.action);
    } else {
      row = this.userRow(label, !!ev.action, ev.step);
      this.append(row, live);
    }
    row.setAttribute('data-seq', String(seq));
    this.renderedInputs.set(seq, row);
  };

  W.addNote = function (text, live) {
    var row = el('div', 'note', text);
    this.append(row, live);
    if (live) this.announce(text);
    return row;
  };

  W.showTyping = function (on) {
    if (!this.typingRow) return;
    var was = !this.typingRow.hidden;
    this.typingRow.hidden = !on;
    if (on && !was && this.nearBottom()) this.log.scrollTop = this.log.scrollHeight;
  };

  /** A person may be written to now (the conversation is handed off and not over). */
  W.withPerson = function () {
    return this.status === 'human' && !this.ended && !this.fatal;
  };

  W.setStatus = function (status) {
    if (status === this.status) return;
    this.status = status;
    if (status !== 'human') this.showAgentTyping(false);
    this.updateHeader();
  };

  W.setAgent = function (name) {
    this.agentName = name;
    this.updateHeader();
  };

  /** The assistant speaks again: a person handed the conversation back to the flow. */
  W.handedBack = function () {
    if (this.status === 'human') this.setStatus('active');
  };

  /** "Ann is typing…" while a person types; it goes after 6 s without a refresh. */
  W.showAgentTyping = function (on, name) {
    var self = this;
    clearTimeout(this.timers.agentTyping);
    var row = this.agentTypingRow;
    if (!row) return;
    if (!on) { row.hidden = true; return; }
    var who = name ? String(name) : (this.agentName || 'A person from the team');
    this.agentTypingText.textContent = who + ' is typing…';
    var stick = row.hidden && this.nearBottom();
    row.hidden = false;
    if (stick) this.log.scrollTop = this.log.scrollHeight;
    this.timers.agentTyping = setTimeout(function () { self.showAgentTyping(false); }, 6000);
  };

  var CSAT_WORDS = ['very poor', 'poor', 'okay', 'good', 'excellent'];

  /** The rating question after a person resolved the conversation (also after `end`). */
  W.renderCsat = function (ev, seq, live) {
    if (this.csat && !this.csat.done) { this.csat.done = true; this.csat.closed = true; this.renderCsatBody(this.csat); }
    var scale = Math.max(2, Math.min(10, typeof ev.scale === 'number' ? Math.round(ev.scale) : 5));
    var row = el('div', 'csat');
    row.setAttribute('data-seq', String(seq));
    row.tabIndex = -1;
    var c = this.csat = {
      row: row, seq: seq, scale: scale, score: null, done: false, closed: false,
      question: ev.question ? String(ev.question) : 'How would you rate the help you received?'
    };
    this.renderCsatBody(c);
    this.append(row, live);
    if (live) this.announce(c.question + ' Choose from 1 to ' + scale + '.');
  };

  W.renderCsatBody = function (c) {
    var self = this;
    var row = c.row;
    var hadFocus = !!this.shadow.activeElement && row.contains(this.shadow.activeElement);
    while (row.firstChild) row.removeChild(row.firstChild);
    if (c.done || c.score != null) {
      var text = c.closed && c.score == null ? 'This rating is closed.'
        : 'Thank you for your rating' + (c.score != null ? ' (' + c.score + ' out of ' + c.scale + ')' : '') + '.';
      row.appendChild(el('p', 'thanks', text));
      // Keyboard users stay where they were.
      if (hadFocus) row.focus({ preventScroll: true });
      return;
    }
    var q = el('p', 'q', c.question);
    q.id = this.uid + '-csat-' + c.seq;
    row.appendChild(q);
    var group = el('div', 'scale');
    group.setAttribute('role', 'group');
    group.setAttribute('aria-labelledby', q.id);
    for (var n = 1; n <= c.scale; n++) {
      (function (n) {
        var b = el('button', 'num', String(n));
        b.type = 'button';
        var words = c.scale === 5 ? n + ' – ' + CSAT_WORDS[n - 1] : n + ' out of ' + c.scale;
        b.setAttribute('aria-label', words);
        b.title = words;
        b.addEventListener('click', function () { self.sendRate(n); });
        group.appendChild(b);
      })(n);
    }
    row.appendChild(group);
    var legend = el('div', 'legend');
    legend.setAttribute('aria-hidden', 'true');
    legend.appendChild(el('span', null, c.scale === 5 ? '1 · Very poor' : '1 · Lowest'));
    legend.appendChild(el('span', null, c.scale === 5 ? '5 · Excellent' : c.scale + ' · Highest'));
    row.appendChild(legend);
  };

  /** Sends the rating; the thank-you shows at once (the `csat` event confirms it). */
  W.sendRate = function (score) {
    var c = this.csat;
    if (!c || c.done || c.score != null) return;
    c.score = score;
    this.sendInput('rate', { score: score }, null);
    this.renderCsatBody(c);
    this.announce('Thank you for your rating.');
  };

  /** The rating is recorded (a `csat` event, from this tab or another). */
  W.csatDone = function (score) {
    var c = this.csat;
    if (!c) return;
    c.done = true;
    if (typeof score === 'number') c.score = score;
    this.renderCsatBody(c);
  };

  W.setProgress = function (p) {
    if (typeof p !== 'number' || !isFinite(p)) return;
    var pct = Math.round(Math.max(0, Math.min(1, p)) * 100);
    this.progress.hidden = false;
    this.progressBar.style.width = pct + '%';
    this.progress.setAttribute('aria-valuenow', String(pct));
    this.progress.setAttribute('aria-valuetext', pct + '% done');
  };

  W.announce = function (text) {
    if (!text) return;
    var p = el('p', null, text);
    this.live.appendChild(p);
    while (this.live.childNodes.length > 4) this.live.removeChild(this.live.firstChild);
    var live = this.live;
    setTimeout(function () { if (p.parentNode === live) live.removeChild(p); }, 15000);
  };

  W.updateBadge = function () {
    if (!this.badge) return;
    this.badge.hidden = !this.unread;
    this.badge.textContent = this.unread > 9 ? '9+' : String(this.unread);
    this.updateHeader();
  };

  W.showAlert = function (text) {
    var self = this;
    this.alertEl.textContent = text;
    this.alertEl.hidden = false;
    clearTimeout(this.timers.alert);
    if (!this.fatal) this.timers.alert = setTimeout(function () { self.hideAlert(); }, 9000);
  };

  W.hideAlert = function () {
    if (this.fatal) return;
    this.alertEl.hidden = true;
    this.alertEl.textContent = '';
  };

  // ── the open question ──
  W.currentAsk = function () {
    if (this.ended || !this.openAsk) return null;
    if (this.answeredAsk === this.openAsk.seq) return null;
    return this.openAsk;
  };

  W.renderControls = function (force) {
    if (!this.card) return;
    var ask = this.currentAsk();
    var human = !ask && this.withPerson(); // the composer writes to a person
    var key = [ask ? ask.seq : '-', this.ended ? 'end' : '', this.fatal || '', this.replaying ? 'r' : '', human ? 'h' : ''].join('|');
    if (!force && key === this.controlsKey) return;
    var hadFocus = this.focusInside();
    this.controlsKey = key;
    var card = this.card;
    while (card.firstChild) card.removeChild(card.firstChild);
    card.hidden = true;

    var ended = this.ended && !this.fatal;
    this.restartBtn.hidden = !ended;
    this.restartBtn.disabled = this.hasPending('restart');
    this.form.hidden = ended;
    this.hintEl.hidden = ended;
    this.nav.hidden = !ask || !(ask.can_back || ask.optional);
    this.backBtn.hidden = !(ask && ask.can_back);
    this.skipBtn.hidden = !(ask && ask.optional);

    this.buildField(ask);
    if (ask && !TEXT_TYPES[ask.input]) this.buildCard(ask);
    if (!card.hidden) this.log.scrollTop = this.log.scrollHeight;

    // Focus the new question when the participant is using the widget.
    var wantFocus = !this.replaying && this.isOpen &&
      (hadFocus || this.focusLost() || (this.opts.autofocus && !this.autofocused));
    if (ended && wantFocus) {
      // A rating still to give comes first (it is in the log, above "Start again").
      var rate = this.csatButton();
      if (rate && rate.parentNode.contains(this.shadow.activeElement)) return;
      (rate || this.restartBtn).focus();
      return;
    }
    if ((ask || human) && wantFocus) {
      this.autofocused = true;
      var first = !card.hidden ? card.querySelector('button:not(:disabled),input:not(:disabled)') : null;
      (first || this.field).focus({ preventScroll: true });
      this.log.scrollTop = this.log.scrollHeight;
    }
  };

  /** The first button of a rating not yet given, if any. */
  W.csatButton = function () {
    var c = this.csat;
    return c && !c.done && c.score == null ? c.row.querySelector('button') : null;
  };

  /** The participant was in the widget and the focused control went away with it. */
  W.focusLost = function () {
    return this.engaged && lastFocusHost === this.host &&
      (document.activeElement === this.host || document.activeElement === document.body || document.activeElement === null) &&
      (!this.shadow.activeElement || this.shadow.activeElement === this.log);
  };

  W.focusInside = function () {
    var a = this.shadow.activeElement;
    return !!a && a !== this.launcher && this.panel.contains(a);
  };

  W.buildField = function (ask) {
    var self = this;
    var type = ask ? ask.input : null;
    var human = !ask && this.withPerson();
    // What was typed to a person survives the field being rebuilt.
    var keepText = human && this.fieldHuman && this.field ? this.field.value : '';
    var multiline = type === 'text' || human;
    var f = multiline ? el('textarea', 'input') : el('input', 'input');
    if (multiline) f.rows = 1;
    else f.type = { email: 'email', phone: 'tel', url: 'url' }[type] || 'text';
    f.setAttribute('aria-describedby', this.hintEl.id);
    f.autocomplete = type === 'email' ? 'email' : type === 'phone' ? 'tel' : type === 'url' ? 'url' : 'off';
    if (type === 'number') f.inputMode = ask.integer && !(typeof ask.min === 'number' && ask.min < 0) ? 'numeric' : 'decimal';
    if (type === 'email' || type === 'url' || type === 'phone') { f.spellcheck = false; f.setAttribute('autocapitalize', 'off'); }
    var ph;
    if (human) {
      ph = 'Write to the team…';
    } else if (!ask) {
      ph = this.fatal ? 'Chat unavailable' : 'Waiting for the assistant…';
      f.disabled = true;
    } else if (ask.placeholder) {
      ph = String(ask.placeholder);
    } else {
      ph = {
        text: 'Type your answer…', number: 'Type a number…', email: 'name@example.com',
        phone: 'Phone number', url: 'example.com', date: 'Or type a date…', date_range: 'Or type two dates…'
      }[type] || 'Or type your answer…';
    }
    f.placeholder = ph;
    f.setAttribute('aria-label', human ? 'Message to the team' : !ask ? 'Message (not available yet)' : TEXT_TYPES[type] ? 'Your answer' : 'Or type your answer');
    if (keepText) f.value = keepText;
    if (ask && this.restoreDraft && this.restoreDraft.askSeq === ask.seq) {
      f.value = this.restoreDraft.text;
    }
    this.restoreDraft = null;
    f.addEventListener('input', function () { self.autogrow(); self.validateField(); });
    f.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        self.submitComposer();
      }
    });
    while (this.fieldWrap.firstChild) this.fieldWrap.removeChild(this.fieldWrap.firstChild);
    this.fieldWrap.appendChild(f);
    this.field = f;
    this.fieldAsk = ask;
    this.fieldHuman = human;
    this.autogrow();
    this.validateField();
  };

  W.autogrow = function () {
    var f = this.field;
    if (!f || f.tagName !== 'TEXTAREA') return;
    f.style.height = 'auto';
    f.style.height = Math.min(132, f.scrollHeight + 2) + 'px';
  };

  /** Client-side hints mirroring the server's validation; the server stays the authority. */
  W.checkText = function (ask, raw) {
    var v = raw.trim();
    var r = { ok: v.length > 0, hint: '', warn: false };
    if (!ask) return { ok: false, hint: '' };
    if (utf8Length(v) > 8000) return { ok: false, hint: 'That is too long to send.', warn: true };
    var type = ask.input;
    if (type === 'text') {
      var n = chars(v);
      var min = ask.min_length || 0;
      var max = ask.max_length || 2000;
      if (n > max) return { ok: false, hint: n + ' / ' + max + ' characters — please shorten it.', warn: true };
      if (min && n < min) {
        r.ok = false;
        r.hint = n ? 'At least ' + min + ' characters (' + n + ' / ' + min + ').' : 'At least ' + min + ' characters.';
        r.warn = n > 0;
        return r;
      }
      if (ask.max_length && n > max * 0.8) r.hint = n + ' / ' + max + ' characters.';
      else if (ask.min_length && ask.max_length) r.hint = min + '–' + max + ' characters.';
      else if (ask.max_length) r.hint = 'Up to ' + max + ' characters.';
      return r;
    }
    if (type === 'number') {
      var parts = [];
      var lo = typeof ask.min === 'number' ? ask.min : null;
      var hi = typeof ask.max === 'number' ? ask.max : null;
      if (lo != null && hi != null) parts.push('Between ' + fmtNum(lo) + ' and ' + fmtNum(hi));
      else if (lo != null) parts.push('At least ' + fmtNum(lo));
      else if (hi != null) parts.push('Up to ' + fmtNum(hi));
      if (ask.integer) parts.push('a whole number');
      if (ask.step_size) parts.push('in steps of ' + fmtNum(ask.step_size));
      r.hint = parts.length ? parts.join(', ') + '.' : '';
      // Only plain numbers are checked here; "50k" or "€1,200" are the server's to read.
      var plain = /^-?\d+(\.\d{1,2}|\.\d{4,})?$/.test(v) ? parseFloat(v) : null;
      if (plain != null && ((lo != null && plain < lo) || (hi != null && plain > hi))) {
        r.ok = false;
        r.warn = true;
      } else if (plain != null && ask.integer && plain % 1 !== 0) {
        r.warn = true;
      }
      return r;
    }
    if (type === 'email') {
      r.hint = v && !/^(mailto:)?[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v) ? 'An email address looks like name@example.com.' : '';
      r.warn = !!r.hint;
      return r;
    }
    if (type === 'url') {
      r.hint = v && !/^(https?:\/\/)?[^\s.]+\.[^\s]+$/i.test(v) ? 'A web address looks like example.com.' : '';
      r.warn = !!r.hint;
      return r;
    }
    if (type === 'phone') {
      r.hint = v && (v.replace(/\D/g, '').length < 6) ? 'Include the full number, e.g. +31 6 1234 5678.' : '';
      r.warn = !!r.hint;
      return r;
    }
    return r;
  };

  /** A message to a person: anything not empty, up to the typed-answer limit. */
  W.checkSay = function (raw) {
    var v = raw.trim();
    if (utf8Length(v) > 8000) return { ok: false, hint: 'That is too long to send.', warn: true };
    return { ok: v.length > 0, hint: '', warn: false };
  };

  W.validateField = function () {
    var ask = this.fieldAsk;
    var human = this.fieldHuman;
    var value = this.field ? this.field.value : '';
    var res = human ? this.checkSay(value) : this.checkText(ask, value);
    this.sendBtn.disabled = !(ask || human) || !res.ok;
    this.hintEl.textContent = ask || human ? res.hint : '';
    this.hintEl.classList.toggle('warn', !!res.warn);
    return res;
  };

  W.submitComposer = function () {
    var ask = this.currentAsk();
    if (!ask && this.fieldHuman && this.field && this.withPerson()) {
      if (!this.validateField().ok) return;
      var said = this.field.value.trim();
      // The field stays (the person may get several messages): empty it first.
      this.field.value = '';
      this.autogrow();
      this.validateField();
      this.sendSay(said);
      return;
    }
    if (!ask || !this.field) return;
    var res = this.validateField();
    if (!res.ok) return;
    var text = this.field.value.trim();
    this.sendAnswer(ask, { text: text }, text, text);
  };

  W.buildCard = function (ask) {
    var self = this;
    var card = this.card;
    var type = ask.input;
    var options = Array.isArray(ask.options) ? ask.options : [];
    var items = Array.isArray(ask.items) ? ask.items : [];
    card.hidden = false;

    function optButton() {
      var b = el('button', 'opt');
      b.type = 'button';
      return b;
    }

    if (type === 'choice' || type === 'yes_no') {
      var group = el('div', 'opts');
      group.setAttribute('role', 'group');
      group.setAttribute('aria-label', 'Answers');
      var opts = options.length ? options : (type === 'yes_no' ? [{ value: 'yes', label: 'Yes' }, { value: 'no', label: 'No' }] : []);
      opts.forEach(function (o) {
        var b = optButton();
        var label = o.label != null ? String(o.label) : String(o.value);
        b.textContent = label;
        b.addEventListener('click', function () { self.sendAnswer(ask, { values: [String(o.value)] }, label); });
        group.appendChild(b);
      });
      card.appendChild(group);
      if (!opts.length) card.hidden = true;
      return;
    }

    if (type === 'multiple') {
      var min = ask.min_picks != null ? ask.min_picks : 1;
      var max = ask.max_picks != null ? ask.max_picks : null;
      var picked = [];
      var mg = el('div', 'opts');
      mg.setAttribute('role', 'group');
      mg.setAttribute('aria-label', 'Choose one or more');
      var buttons = [];
      var hint = el('div', 'cardhint');
      hint.id = this.uid + '-picks';
      var send = el('button', 'btn', 'Send');
      send.type = 'button';
      send.setAttribute('aria-describedby', hint.id);
      var refresh = function () {
        var n = picked.length;
        buttons.forEach(function (b) {
          var on = picked.indexOf(b._v) >= 0;
          b.setAttribute('aria-pressed', on ? 'true' : 'false');
          b.disabled = !on && max != null && n >= max;
        });
        var rule = max != null && max === min ? 'Pick ' + min
          : max != null ? (min > 1 ? 'Pick ' + min + '–' + max : 'Pick up to ' + max)
          : (min > 1 ? 'Pick at least ' + min : 'Pick one or more');
        hint.textContent = rule + (n ? ' · ' + n + ' selected' : '');
        send.disabled = n < min || (max != null && n > max);
        send.textContent = n ? 'Send (' + n + ')' : 'Send';
      };
      options.forEach(function (o) {
        var b = optButton();
        b._v = String(o.value);
        b._l = o.label != null ? String(o.label) : String(o.value);
        var tick = el('span', 'tick');
        tick.appendChild(icon('check'));
        tick.setAttribute('aria-hidden', 'true');
        b.appendChild(tick);
        b.appendChild(el('span', null, b._l));
        b.addEventListener('click', function () {
          var i = picked.indexOf(b._v);
          if (i >= 0) picked.splice(i, 1);
          else if (max == null || picked.length < max) picked.push(b._v);
          refresh();
        });
        buttons.push(b);
        mg.appendChild(b);
      });
      send.addEventListener('click', function () {
        if (send.disabled) return;
        // Values in the order offered, as the server saves them.
        var vals = [];
        var labels = [];
        buttons.forEach(function (b) { if (picked.indexOf(b._v) >= 0) { vals.push(b._v); labels.push(b._l); } });
        self.sendAnswer(ask, { values: vals }, labels.join(', '));
      });
      card.appendChild(mg);
      var row = el('div', 'btnrow');
      row.appendChild(hint);
      row.appendChild(send);
      card.appendChild(row);
      refresh();
      return;
    }

    if (type === 'rating' || type === 'nps') {
      var lo = type === 'nps' ? 0 : 1;
      var hi = type === 'nps' ? 10 : Math.max(2, Math.min(10, ask.scale || (typeof ask.max === 'number' ? ask.max : 5)));
      var stars = type === 'rating' && ask.style !== 'numbers';
      var wrap = el('div', stars ? 'stars' : 'scale');
      wrap.setAttribute('role', 'group');
      wrap.setAttribute('aria-label', type === 'nps' ? 'Score from 0 (not at all likely) to 10 (extremely likely)' : 'Rating from ' + lo + ' to ' + hi);
      var all = [];
      var light = function (k) { all.forEach(function (b, i) { b.classList.toggle('on', k != null && i + lo <= k); }); };
      for (var n = lo; n <= hi; n++) {
        (function (n) {
          var b = el('button', stars ? 'star' : 'num');
          b.type = 'button';
          if (stars) {
            b.textContent = '★';
            b.setAttribute('aria-label', n + (n === 1 ? ' star' : ' stars') + ' out of ' + hi);
          } else {
            b.textContent = String(n);
            b.setAttribute('aria-label', n + ' out of ' + hi);
          }
          if (stars) {
            b.addEventListener('mouseenter', function () { light(n); });
            b.addEventListener('focus', function () { light(n); });
            b.addEventListener('mouseleave', function () { light(null); });
            b.addEventListener('blur', function () { light(null); });
          }
          b.addEventListener('click', function () { self.sendAnswer(ask, { text: String(n) }, String(n)); });
          all.push(b);
          wrap.appendChild(b);
        })(n);
      }
      card.appendChild(wrap);
      if (type === 'nps' || !stars) {
        var legend = el('div', 'legend');
        legend.setAttribute('aria-hidden', 'true');
        legend.appendChild(el('span', null, type === 'nps' ? '0 · Not at all likely' : lo + ' · Lowest'));
        legend.appendChild(el('span', null, type === 'nps' ? '10 · Extremely likely' : hi + ' · Highest'));
        card.appendChild(legend);
      }
      return;
    }

    if (type === 'date' || type === 'date_range') {
      var range = type === 'date_range';
      var minD = typeof ask.min === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(ask.min) ? ask.min : '';
      var maxD = typeof ask.max === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(ask.max) ? ask.max : '';
      var box = el('div', 'dates');
      var mk = function (labelText, id) {
        var field = el('div', 'field');
        var lab = el('label', null, labelText);
        var inp = el('input', 'date');
        inp.type = 'date';
        inp.id = id;
        lab.htmlFor = id;
        if (minD) inp.min = minD;
        if (maxD) inp.max = maxD;
        field.appendChild(lab);
        field.appendChild(inp);
        box.appendChild(field);
        return inp;
      };
      var a = mk(range ? 'From' : 'Date', this.uid + '-d1-' + ask.seq);
      var b2 = range ? mk('To', this.uid + '-d2-' + ask.seq) : null;
      var go = el('button', 'btn', range ? 'Send dates' : 'Send date');
      go.type = 'button';
      var dh = el('div', 'cardhint');
      var inRange = function (v) { return (!minD || v >= minD) && (!maxD || v <= maxD); };
      var bounds = minD && maxD ? 'Between ' + fmtDate(minD) + ' and ' + fmtDate(maxD) + '.'
        : minD ? 'From ' + fmtDate(minD) + ' on.' : maxD ? 'Up to ' + fmtDate(maxD) + '.' : '';
      var check = function () {
        var v1 = a.value;
        var v2 = b2 ? b2.value : '';
        // Only touch `min` when it changes: resetting it mid-typing clears the field.
        if (b2 && b2.min !== (v1 || minD || '')) b2.min = v1 || minD || '';
        var ok = !!v1 && inRange(v1) && (!b2 || (!!v2 && inRange(v2) && v2 >= v1));
        go.disabled = !ok;
        var msg = bounds;
        if ((v1 && !inRange(v1)) || (v2 && !inRange(v2))) msg = 'Please pick a date. ' + bounds;
        else if (b2 && v1 && v2 && v2 < v1) msg = 'The end date must be on or after the start date.';
        dh.textContent = msg;
        dh.style.color = msg !== bounds ? '#a14a06' : '';
        return ok;
      };
      a.addEventListener('input', check);
      a.addEventListener('change', check);
      if (b2) { b2.addEventListener('input', check); b2.addEventListener('change', check); }
      var submit = function () {
        if (!check()) return;
        if (range) self.sendAnswer(ask, { values: [a.value, b2.value] }, a.value + ' – ' + b2.value);
        else self.sendAnswer(ask, { text: a.value }, a.value);
      };
      go.addEventListener('click', submit);
      [a, b2].forEach(function (inp) {
        if (inp) inp.addEventListener('keydown', function (e) { if (e.key === 'Enter') { e.preventDefault(); submit(); } });
      });
      card.appendChild(box);
      var drow = el('div', 'btnrow');
      drow.appendChild(dh);
      drow.appendChild(go);
      card.appendChild(drow);
      check();
      return;
    }

    if (type === 'checklist') {
      var fs = el('fieldset', 'checks');
      var lg = el('legend', 'sr', 'Tick every item to confirm');
      fs.appendChild(lg);
      var boxes = [];
      var confirm = el('button', 'btn', 'Confirm');
      confirm.type = 'button';
      var ch = el('div', 'cardhint');
      var upd = function () {
        var n = boxes.filter(function (x) { return x.checked; }).length;
        boxes.forEach(function (x) { x.parentNode.classList.toggle('on', x.checked); });
        confirm.disabled = n !== boxes.length;
        ch.textContent = n + ' of ' + boxes.length + ' ticked';
      };
      items.forEach(function (it, i) {
        var lab = el('label', 'check');
        var cb = el('input');
        cb.type = 'checkbox';
        cb.value = String(it.value);
        cb.addEventListener('change', upd);
        lab.appendChild(cb);
        lab.appendChild(el('span', null, mdPlain(it.label != null ? it.label : it.value)));
        boxes.push(cb);
        fs.appendChild(lab);
      });
      confirm.addEventListener('click', function () {
        if (confirm.disabled) return;
        self.sendAnswer(ask, { values: boxes.map(function (x) { return x.value; }) }, '✓ Confirmed');
      });
      card.appendChild(fs);
      var crow = el('div', 'btnrow');
      crow.appendChild(ch);
      crow.appendChild(confirm);
      card.appendChild(crow);
      upd();
      return;
    }

    card.hidden = true; // unknown question type: the text box still works
  };

  // ── sending inputs ──
  W.sendInput = function (kind, fields, label, draft) {
    // A message to a person or a rating answers no question.
    var ask = kind === 'say' || kind === 'rate' ? null : this.openAsk;
    var id = uuid();
    var frame = Object.assign({ type: kind, id: id }, fields);
    var p = { id: id, frame: frame, kind: kind, step: fields.step || (ask && ask.step) || null, bubble: null, askSeq: null, draft: null, conversation: this.shownConversation, sentAt: Date.now() };
    if (kind === 'say' && draft != null) p.draft = { askSeq: null, text: draft };
    if (kind !== 'restart' && kind !== 'rate') {
      var row = this.userRow(label, kind !== 'answer' && kind !== 'say', fields.step);
      row.classList.add('sending');
      var meta = el('div', 'meta', 'Sending…');
      row.appendChild(meta);
      p.bubble = row;
      this.append(row, true);
      this.log.scrollTop = this.log.scrollHeight;
      if (ask) {
        p.askSeq = ask.seq;
        this.answeredAsk = ask.seq;
        if (draft != null) p.draft = { askSeq: ask.seq, text: draft };
      }
    }
    this.pending.set(id, p);
    this.hideAlert();
    this.engaged = true;
    // Keep keyboard focus inside the widget while the controls are replaced.
    var keep = this.focusInside();
    this.sendRaw(frame); // if offline, it is sent after the next welcome
    this.renderControls();
    if (keep && !this.shadow.activeElement) this.log.focus({ preventScroll: true });
    return p;
  };

  W.sendAnswer = function (ask, payload, label, draft) {
    if (!ask || ask !== this.currentAsk()) return;
    var fields = { step: ask.step };
    if (payload.values) fields.values = payload.values; else fields.text = payload.text;
    this.sendInput('answer', fields, label, draft);
  };

  /** Free text to the person who has the conversation. */
  W.sendSay = function (text) {
    if (!this.withPerson() || this.currentAsk()) return;
    this.sendInput('say', { text: text }, text, text);
  };

  W.sendBack = function () {
    var ask = this.currentAsk();
    if (!ask || !ask.can_back) return;
    this.sendInput('back', {}, 'Back');
  };

  W.sendSkip = function () {
    var ask = this.currentAsk();
    if (!ask || !ask.optional) return;
    this.sendInput('skip', {}, 'Skipped');
  };

  W.sendRestart = function () {
    if (this.hasPending('restart')) return;
    this.restartBtn.disabled = true;
    this.engaged = true;
    this.sendInput('restart', {}, null);
    if (!this.ws && this.wanted()) this.reconnectNow();
  };

  // ── open / close / destroy ──
  W.open = function () {
    if (this.destroyed) return;
    if (this.mode !== 'bubble') { this.isOpen = true; return; }
    if (!this.ws && !this.timers.reconnect && this.wanted()) this.connect();
    this.isOpen = true;
    this.root.classList.add('open');
    this.launcher.setAttribute('aria-expanded', 'true');
    this.unread = 0;
    this.updateBadge();
    this.scrollToEnd(true);
    this.scheduleAck();
    var self = this;
    this.engaged = true;
    setTimeout(function () {
      if (!self.isOpen) return;
      var ask = self.currentAsk();
      var target = null;
      if (ask && !self.card.hidden) target = self.card.querySelector('button:not(:disabled),input:not(:disabled)');
      if (!target && (ask || self.withPerson()) && self.field && !self.field.disabled) target = self.field;
      if (!target && !self.restartBtn.hidden) target = self.restartBtn;
      (target || self.log).focus({ preventScroll: true });
      self.scrollToEnd(true);
    }, 30);
  };

  W.close = function (restoreFocus) {
    if (this.mode !== 'bubble' || !this.isOpen) return;
    this.isOpen = false;
    this.root.classList.remove('open');
    this.launcher.setAttribute('aria-expanded', 'false');
    if (restoreFocus) this.launcher.focus();
  };

  W.destroy = function () {
    if (this.destroyed) return;
    this.destroyed = true;
    var t = this.timers;
    Object.keys(t).forEach(function (k) { clearTimeout(t[k]); clearInterval(t[k]); });
    var ws = this.ws;
    this.ws = null;
    if (ws) closeSocket(ws);
    this.listeners.forEach(function (l) { l[0].removeEventListener(l[1], l[2], l[3]); });
    this.listeners = [];
    if (!--focusWatchers) document.removeEventListener('focusin', onDocFocusIn, true);
    if (this.host.parentNode) this.host.parentNode.removeChild(this.host);
    var i = instances.indexOf(this);
    if (i >= 0) instances.splice(i, 1);
    var b = bubbles.indexOf(this);
    if (b >= 0) {
      bubbles.splice(b, 1);
      restack(); // the launchers left of it move over
    }
  };

  // ─────────────────────────────────────────────────────────────── API ──
  function controller(w) {
    return {
      open: function () { w.open(); },
      close: function () { w.close(false); },
      destroy: function () { w.destroy(); },
      get element() { return w.host; }
    };
  }

  function whenReady(fn) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn, { once: true });
    else fn();
  }

  function mount(options) {
    var o = Object.assign({}, options || {});
    if (!o.flow || typeof o.flow !== 'string') throw new TypeError('Volley.mount: "flow" is required');
    var w = null;
    var queued = [];
    var api = {
      open: function () { if (w) w.open(); else queued.push('open'); },
      close: function () { if (w) w.close(false); else queued.push('close'); },
      destroy: function () { if (w) w.destroy(); else queued.push('destroy'); },
      get element() { return w ? w.host : null; }
    };
    whenReady(function () {
      if (queued.indexOf('destroy') >= 0) return;
      w = new Widget(o);
      instances.push(w);
      queued.forEach(function (q) { api[q](); });
    });
    return api;
  }

  function fromScript(s) {
    if (!s || s.hasAttribute('data-volley-mounted')) return null;
    var d = s.dataset || {};
    if (!d.flow) return null;
    s.setAttribute('data-volley-mounted', '');
    var server;
    try { server = new URL(s.src, location.href).origin; } catch (e) { server = scriptBase; }
    return mount({
      flow: d.flow,
      mode: d.mode === 'inline' ? 'inline' : 'bubble',
      target: d.target || null,
      after: s,
      open: truthy(d.open),
      title: d.title || null,
      userId: d.userId || null,
      userSignature: d.userSignature || null,
      userName: d.userName || null,
      userEmail: d.userEmail || null,
      server: server
    });
  }

  function autoMount(s) {
    if (s && s.dataset && s.dataset.flow) return fromScript(s);
    // async scripts may lack currentScript: mount every tagged script not yet mounted.
    var list = document.querySelectorAll('script[src*="widget.js"][data-flow]:not([data-volley-mounted])');
    var last = null;
    for (var i = 0; i < list.length; i++) last = fromScript(list[i]) || last;
    return last;
  }

  var Volley = {
    version: VERSION,
    mount: mount,
    instances: function () { return instances.map(controller); }
  };
  Object.defineProperty(Volley, '_autoMount', { value: autoMount, enumerable: false });
  window.Volley = Volley;

  autoMount(SELF);
})();
