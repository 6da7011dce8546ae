// Commeow's web app: channel list, watch page (player, chat, donations), top-up with Kakao
// Pay, sign-up and log-in, streamer dashboard. No framework and nothing from the internet:
// the box serves everything. Every piece of text from the network goes into the page as
// text (textContent), never as HTML; tokens live in localStorage and travel only in
// Authorization headers and the chat's auth frame, never in URLs.

const TEXT = {
  ko: {
    channels: "채널", live: "방송 중", offline: "방송 전", viewers: "명 시청", login: "로그인",
    signup: "회원가입", logout: "로그아웃", topup: "충전", dashboard: "방송 관리",
    noChannels: "아직 채널이 없어요.", brb: "잠시 후 돌아올게요", brbNote: "방송이 다시 시작되면 자동으로 재생돼요.",
    unmute: "🔇 눌러서 소리 켜기", chatLogin: "로그인하면 채팅할 수 있어요", send: "보내기",
    say: "메시지 보내기", donate: "후원", balance: "잔액", points: "포인트", message: "메시지 (선택)",
    donated: "후원했어요!", username: "아이디", password: "비밀번호", nickname: "닉네임",
    haveAccount: "계정이 있나요?", noAccount: "처음인가요?", products: "충전할 포인트를 고르세요",
    payPhone: "휴대폰으로 QR 코드를 찍어 카카오페이로 결제하세요", payPc: "PC에서 결제하기",
    waiting: "결제를 기다리는 중…", paid: "충전 완료!", newBalance: "새 잔액", payFailed: "결제가 완료되지 않았어요",
    topupsOff: "이 장소에서는 충전을 할 수 없어요.", checkPc: "결제가 처리되었어요. 화면을 확인하세요.",
    myChannels: "내 채널", newChannel: "새 채널 만들기", slug: "주소 (영문 소문자, 숫자, -)", title: "제목",
    create: "만들기", rotate: "스트림 키 새로 만들기", keyOnce: "스트림 키는 지금 한 번만 보여요. 복사해 두세요.",
    copy: "복사", copied: "복사됨", obs: "OBS 설정", server: "서버", streamKey: "스트림 키",
    keyframes: "키프레임 간격", bitrate: "비트레이트",
    oldKey: (at) => `OBS가 아직 예전 스트림 키를 쓰고 있어요 (${at}): 새 키를 OBS에 붙여 넣으세요.`,
    refused: (at, why) => `${at}에 방송을 받을 수 없었어요: ${why}`,
    health: "방송 상태", keyframeLong: (s) => `키프레임이 ${s}초마다 와요: 시청자가 늦게 시작하고 뒤처져요. `,
    bFrames: "B-프레임이 지연을 더해요: OBS 고급 출력 모드에서 B-프레임을 0으로 (x264 옵션: bframes=0).",
    bitrateHigh: (k) => `${k} Kbps는 공연장 와이파이에 너무 커요: 4500 Kbps로 맞추세요.`,
    keyframeHow: "OBS 기본(단순) 출력 모드에는 키프레임 간격 칸이 없어요: 설정 → 출력 → 스트리밍에서 '고급 인코더 설정 사용'을 켜고 x264 옵션에 keyint=60 (30fps 기준)을 넣으세요. 고급 출력 모드에서는 '키프레임 간격'을 2초로.", recent: "최근 후원", none: "아직 없어요.",
    ladder: "화질 단계 (트랜스코딩)", ladderOn: "켜짐", ladderOff: "꺼짐", rejected: "안 됨", liveRungs: "지금 방송 중",
    streamersOnly: "방송 관리는 스트리머 계정으로 로그인해야 해요.", notFound: "찾을 수 없어요.",
    anonymous: "익명", deleted: "삭제된 메시지", streamer: "스트리머", admin: "관리자",
    setupTitle: "처음 설정", setupIntro: "카드의 commeow-setup.txt 파일(또는 박스 화면)에 적힌 설정 코드를 입력하고, 장소 이름과 관리자 계정을 만드세요.",
    setupCode: "설정 코드", venueName: "장소 이름", setupDone: "설정 완료",
  },
  en: {
    channels: "Channels", live: "LIVE", offline: "Offline", viewers: " watching", login: "Log in",
    signup: "Sign up", logout: "Log out", topup: "Top up", dashboard: "Dashboard",
    noChannels: "No channels yet.", brb: "Be right back", brbNote: "Playback resumes by itself when the stream returns.",
    unmute: "🔇 Tap to unmute", chatLogin: "Log in to chat", send: "Send",
    say: "Say something", donate: "Donate", balance: "Balance", points: "points", message: "Message (optional)",
    donated: "Thank you!", username: "Username", password: "Password", nickname: "Nickname",
    haveAccount: "Have an account?", noAccount: "New here?", products: "Choose a top-up",
    payPhone: "Scan the QR code with your phone to pay with Kakao Pay", payPc: "Pay on this PC",
    waiting: "Waiting for the payment…", paid: "Topped up!", newBalance: "New balance", payFailed: "The payment did not go through",
    topupsOff: "Top-ups are not available at this venue.", checkPc: "Payment processed. Check the other screen.",
    myChannels: "My channels", newChannel: "New channel", slug: "Address (a-z, 0-9, -)", title: "Title",
    create: "Create", rotate: "New stream key", keyOnce: "The stream key is shown this once. Copy it now.",
    copy: "Copy", copied: "Copied", obs: "OBS settings", server: "Server", streamKey: "Stream key",
    keyframes: "Keyframe interval", bitrate: "Bitrate",
    oldKey: (at) => `OBS is still using the old stream key (${at}): paste the new one into OBS.`,
    refused: (at, why) => `The box could not take the stream at ${at}: ${why}`,
    health: "Stream health", keyframeLong: (s) => `Keyframes every ${s} s: viewers start late and sit behind. `,
    bFrames: "B-frames add delay: in OBS Advanced mode set B-frames to 0 (x264 options: bframes=0).",
    bitrateHigh: (k) => `${k} Kbps is too much for the venue Wi-Fi: set 4500 Kbps.`,
    keyframeHow: "OBS's default Simple output mode has no keyframe field: in Settings → Output → Streaming tick 'Enable Advanced Encoder Settings' and put keyint=60 (at 30 fps) in x264 Options. In Advanced mode, set 'Keyframe Interval' to 2 s.", recent: "Recent donations", none: "None yet.",
    ladder: "Quality ladder (transcoding)", ladderOn: "on", ladderOff: "off", rejected: "rejected", liveRungs: "Live now",
    streamersOnly: "Log in with a streamer account to manage channels.", notFound: "Not found.",
    anonymous: "anonymous", deleted: "message deleted", streamer: "streamer", admin: "admin",
    setupTitle: "Set up this box", setupIntro: "Type the setup code from commeow-setup.txt on the card (or the box's screen), name the venue and create the admin account.",
    setupCode: "Setup code", venueName: "Venue name", setupDone: "Set up",
  },
};

let lang = localStorage.getItem("lang") || (navigator.language.startsWith("ko") ? "ko" : "en");
if (!TEXT[lang]) lang = "ko";
const t = (key) => TEXT[lang][key] ?? key;

// ---- DOM: elements from tag, attributes and children; strings become text nodes. ----
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const main = () => document.getElementById("main");
function show(...nodes) {
  main().replaceChildren(...nodes);
}

// ---- Session and API ----
const session = {
  get access() { return localStorage.getItem("access_token"); },
  get refresh() { return localStorage.getItem("refresh_token"); },
  save(pair) {
    localStorage.setItem("access_token", pair.access_token);
    localStorage.setItem("refresh_token", pair.refresh_token);
  },
  clear() {
    localStorage.removeItem("access_token");
    localStorage.removeItem("refresh_token");
    me = null;
  },
};
let me = null;

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, headers = {}) {
  const send = () => fetch(path, {
    method,
    headers: {
      ...(body ? { "content-type": "application/json" } : {}),
      ...(session.access ? { authorization: `Bearer ${session.access}` } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const sentWith = session.access;
  let response = await send();
  if (response.status === 401 && session.refresh) {
    const error = await response.clone().json().catch(() => ({}));
    // Another call may have refreshed while this one was out: then just send again.
    if (error?.error?.code === "token_expired" && (session.access !== sentWith || await refreshTokens())) response = await send();
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.code ?? "error", data?.error?.message ?? response.statusText);
  }
  return data;
}

// One refresh at a time: the calls that find the access token expired together (the
// dashboard makes several at once) all wait for the same one. Refresh tokens rotate, so a
// second refresh with the same token would be taken for a stolen copy.
let refreshing = null;
function refreshTokens() {
  refreshing ??= (async () => {
    const sent = session.refresh;
    try {
      const response = await fetch("/api/auth/refresh", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: sent }),
      });
      if (response.ok) { session.save(await response.json()); return true; }
      // Another tab refreshed meanwhile: its tokens are already in storage.
      if (session.refresh && session.refresh !== sent) return true;
      session.clear();
      return false;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function whoAmI() {
  if (!session.access) return null;
  try { me = await api("GET", "/api/me"); } catch { session.clear(); }
  return me;
}

/// An Idempotency-Key that grows with time (like UUIDv7): the box indexes keys in order.
function idempotencyKey() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `${(Date.now() * 1000).toString(16).padStart(14, "0")}-${random[0].toString(16)}${random[1].toString(16)}`;
}

// ---- Header ----
function renderNav() {
  const nav = document.getElementById("nav");
  if (venue) {
    document.querySelector(".brand").textContent = venue;
    document.title = `${venue} · Commeow`;
  }
  const links = [h("a", { href: "/" }, t("channels"))];
  if (me) {
    links.push(h("a", { href: "/topup" }, t("topup")));
    if (me.role === "streamer" || me.role === "admin") links.push(h("a", { href: "/dashboard" }, t("dashboard")));
    links.push(h("span", { class: "muted", id: "me" }, me.nickname));
    links.push(h("button", { onclick: async () => {
      await api("POST", "/api/auth/logout").catch(() => {});
      session.clear(); go("/");
    } }, t("logout")));
  } else {
    const here = ["/login", "/signup"].includes(location.pathname) ? "/" : location.pathname;
    links.push(h("a", { href: `/login?next=${encodeURIComponent(here)}` }, t("login")));
  }
  links.push(h("button", { id: "lang", onclick: () => {
    lang = lang === "ko" ? "en" : "ko";
    localStorage.setItem("lang", lang);
    document.documentElement.lang = lang;
    route();
  } }, lang === "ko" ? "EN" : "한국어"));
  nav.replaceChildren(...links);
}

// ---- Pages ----
let leave = () => {};

// A fresh box: the first visitor types the setup code, names the venue, becomes admin.
function onboarding() {
  const fields = {
    setupCode: h("input", { id: "setup-code", autocomplete: "one-time-code", autocapitalize: "characters", required: true }),
    venueName: h("input", { id: "venue-name", required: true, maxlength: 60 }),
    username: h("input", { id: "username", autocomplete: "username", required: true }),
    password: h("input", { id: "password", type: "password", autocomplete: "new-password", required: true }),
  };
  const error = h("p", { class: "error", id: "form-error" });
  show(h("form", { class: "narrow panel", id: "onboarding", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      session.save(await api("POST", "/api/onboarding", { setup_code: fields.setupCode.value,
        venue_name: fields.venueName.value, username: fields.username.value, password: fields.password.value }));
      venue = fields.venueName.value.trim();
      setupNeeded = false;
      await whoAmI();
      go("/dashboard");
    } catch (failure) { error.textContent = failure.message; }
  } }, h("h2", {}, t("setupTitle")), h("p", { class: "muted" }, t("setupIntro")),
  Object.entries(fields).map(([name, input]) => [h("label", { for: input.id }, t(name)), input]),
  error, h("p", {}, h("button", { class: "primary", id: "submit" }, t("setupDone")))));
}

async function channelList() {
  const list = h("ul", { class: "cards", id: "channels" });
  show(h("h2", {}, t("channels")), list);
  const refresh = async () => {
    const channels = await api("GET", "/api/channels").catch(() => null);
    if (!channels) return;
    list.replaceChildren(...(channels.length ? channels.map((c) => h("li", {},
      h("a", { class: "card", href: `/c/${encodeURIComponent(c.slug)}`, "data-slug": c.slug },
        h("span", { class: c.live ? "badge live" : "badge" }, c.live ? t("live") : t("offline")),
        h("h3", {}, c.title || c.slug),
        h("div", { class: "muted" }, c.streamer?.nickname ?? ""),
        c.live ? h("div", { class: "muted viewers" }, `${c.viewers}${t("viewers")}`) : null))) : [h("li", { class: "muted" }, t("noChannels"))]));
  };
  await refresh();
  const timer = setInterval(refresh, 3000);
  leave = () => clearInterval(timer);
}

let hlsLoaded;
function loadHls() {
  hlsLoaded ??= new Promise((resolve, reject) => {
    document.head.append(h("script", { src: "/assets/hls.light.min.js", onload: resolve, onerror: reject }));
  });
  return hlsLoaded;
}

// Who said it: the nickname, the badge the server gave (the channel's streamer, an admin),
// and the username when the nickname differs from it, since nicknames are not unique.
function who(user) {
  if (!user) return h("span", { class: "who" }, t("anonymous"));
  const parts = [user.nickname];
  if (user.badge) parts.push(h("span", { class: `badge role ${user.badge}`, title: t(user.badge) }, t(user.badge)));
  if (user.username && user.nickname.toLowerCase() !== user.username) parts.push(h("span", { class: "handle" }, `@${user.username}`));
  return h("span", { class: "who", "data-badge": user.badge ?? "" }, ...parts);
}

async function watch(slug) {
  const video = h("video", { id: "video", muted: true, autoplay: true, playsinline: true });
  video.muted = true;
  const unmute = h("button", { class: "unmute primary", id: "unmute", onclick: () => {
    video.muted = false; unmute.classList.add("hidden");
  } }, t("unmute"));
  const brb = h("div", { class: "overlay hidden", id: "brb" }, h("strong", {}, t("brb")), h("span", { class: "muted" }, t("brbNote")));
  const viewers = h("span", { class: "muted", id: "viewer-count" });
  const title = h("h2", { id: "title" }, slug);
  const chat = chatPanel(slug, viewers);
  const donate = me ? donatePanel(slug) : null;
  show(title, h("div", { class: "watch" },
    h("div", {}, h("div", { class: "stage" }, video, brb, unmute), h("p", { class: "row" }, viewers), donate),
    chat.element));

  let player = null;
  let playing = false;
  const start = async () => {
    await loadHls();
    const source = `/hls/${encodeURIComponent(slug)}/master.m3u8`;
    if (window.Hls?.isSupported()) {
      player = new window.Hls({ lowLatencyMode: true, liveSyncDurationCount: 1, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10 });
      player.on(window.Hls.Events.ERROR, (_, data) => { if (data.fatal) stop(); });
      player.loadSource(source);
      player.attachMedia(video);
      // For the venue's devtools (and the browser tests): the player, its levels and ABR.
      window.commeowPlayer = player;
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = source; // Safari and iOS play HLS themselves.
    }
    video.play().catch(() => {});
    playing = true;
    brb.classList.add("hidden");
  };
  const stop = () => {
    player?.destroy(); player = null;
    video.removeAttribute("src"); video.load();
    playing = false;
    brb.classList.remove("hidden");
  };
  // The channel list says whether the stream is live: start when it is, show "be right
  // back" when it stops, and start again when the streamer returns.
  const check = async () => {
    const channels = await api("GET", "/api/channels").catch(() => null);
    const channel = channels?.find((c) => c.slug === slug);
    if (!channel) { if (channels) show(h("p", {}, t("notFound"))); return; }
    title.textContent = channel.title || slug;
    if (channel.live && !playing) await start();
    else if (!channel.live && playing) stop();
    else if (!channel.live) brb.classList.remove("hidden");
  };
  await check();
  const timer = setInterval(check, 2000);
  leave = () => { clearInterval(timer); chat.close(); player?.destroy(); };
}

function chatPanel(slug, viewers) {
  const lines = h("ol", { id: "chat-lines" });
  const input = h("input", { id: "chat-input", maxlength: "300", placeholder: t("say"), autocomplete: "off" });
  const status = h("div", { class: "error", id: "chat-error" });
  const form = me
    ? h("form", { onsubmit: (e) => {
      e.preventDefault();
      if (!input.value.trim() || socket?.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "chat", text: input.value }));
      input.value = "";
    } }, input, h("button", { class: "primary", id: "chat-send" }, t("send")))
    : h("p", { class: "muted", id: "chat-login" }, h("a", { href: `/login?next=${encodeURIComponent(location.pathname)}` }, t("chatLogin")));
  const element = h("section", { class: "panel chat" }, lines, status, form);
  const add = (node) => {
    const atBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 40;
    lines.append(node);
    while (lines.children.length > 200) lines.firstChild.remove();
    if (atBottom) lines.scrollTop = lines.scrollHeight;
  };
  let socket = null;
  let closed = false;
  let backoff = 500;
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/api/channels/${encodeURIComponent(slug)}/chat`);
    socket.onopen = () => {
      backoff = 500;
      if (session.access) socket.send(JSON.stringify({ type: "auth", token: session.access }));
    };
    socket.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === "hello") { lines.replaceChildren(); viewers.textContent = `${frame.viewers}${t("viewers")}`; }
      else if (frame.type === "viewers") viewers.textContent = `${frame.count}${t("viewers")}`;
      else if (frame.type === "chat") add(h("li", { "data-id": frame.id }, who(frame.user), h("span", { class: "text" }, frame.text)));
      else if (frame.type === "donation") add(h("li", { class: "donation" }, who(frame.user), `💝 ${frame.amount.toLocaleString()} ${t("points")} `, h("span", { class: "text" }, frame.message ?? "")));
      else if (frame.type === "system") add(h("li", { class: "system" }, frame.text ?? ""));
      else if (frame.type === "deleted") lines.querySelector(`[data-id="${Number(frame.id)}"]`)?.replaceChildren(h("span", { class: "muted" }, t("deleted")));
      else if (frame.type === "error") {
        status.textContent = frame.message ?? frame.code;
        if (frame.code === "token_expired") refreshTokens().then((ok) => ok && socket.send(JSON.stringify({ type: "auth", token: session.access })));
      } else if (frame.type === "authenticated") status.textContent = "";
    };
    socket.onclose = () => {
      if (closed) return;
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  };
  connect();
  return { element, close: () => { closed = true; socket?.close(); } };
}

function donatePanel(slug) {
  let amount = 1000;
  const balance = h("strong", { id: "balance" }, "…");
  const message = h("input", { id: "donation-message", maxlength: "200", placeholder: t("message") });
  const result = h("div", { id: "donation-result" });
  const presets = [1000, 5000, 10000].map((n) => h("button", { type: "button", "data-amount": n, class: n === amount ? "chosen" : "", onclick: (e) => {
    amount = n;
    for (const b of presets) b.classList.toggle("chosen", b === e.currentTarget);
  } }, n.toLocaleString()));
  const refresh = () => api("GET", "/api/wallet").then((w) => { balance.textContent = w.balance.toLocaleString(); }).catch(() => {});
  refresh();
  return h("form", { class: "panel", id: "donate", onsubmit: async (e) => {
    e.preventDefault();
    result.textContent = "";
    try {
      const donation = await api("POST", `/api/channels/${encodeURIComponent(slug)}/donations`,
        { amount, message: message.value }, { "idempotency-key": idempotencyKey() });
      balance.textContent = donation.balance.toLocaleString();
      result.className = "ok"; result.textContent = t("donated"); message.value = "";
    } catch (error) {
      result.className = "error"; result.textContent = error.message;
    }
  } }, h("div", { class: "row" }, `${t("balance")}: `, balance, ` ${t("points")} · `, h("a", { href: "/topup" }, t("topup"))),
  h("div", { class: "row presets" }, presets), message, h("div", { class: "row" }, h("button", { class: "primary", id: "donate-send" }, t("donate")), result));
}

function accountForm(kind) {
  const next = new URLSearchParams(location.search).get("next") || "/";
  const safeNext = next.startsWith("/") && !next.startsWith("//") ? next : "/";
  const fields = { username: h("input", { id: "username", autocomplete: "username", required: true }),
    password: h("input", { id: "password", type: "password", autocomplete: kind === "login" ? "current-password" : "new-password", required: true }) };
  if (kind === "signup") fields.nickname = h("input", { id: "nickname", required: true });
  const error = h("p", { class: "error", id: "form-error" });
  show(h("form", { class: "narrow panel", id: kind, onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      const credentials = { username: fields.username.value, password: fields.password.value };
      if (kind === "signup") await api("POST", "/api/auth/signup", { ...credentials, nickname: fields.nickname.value });
      session.save(await api("POST", "/api/auth/login", credentials));
      await whoAmI();
      go(safeNext);
    } catch (failure) { error.textContent = failure.message; }
  } }, h("h2", {}, t(kind)),
  Object.entries(fields).map(([name, input]) => [h("label", { for: input.id }, t(name)), input]),
  error, h("p", {}, h("button", { class: "primary", id: "submit" }, t(kind))),
  kind === "login" ? h("p", { class: "muted" }, `${t("noAccount")} `, h("a", { href: `/signup?next=${encodeURIComponent(safeNext)}` }, t("signup")))
    : h("p", { class: "muted" }, `${t("haveAccount")} `, h("a", { href: `/login?next=${encodeURIComponent(safeNext)}` }, t("login")))));
}

const isPhone = () => matchMedia("(pointer: coarse)").matches || /Mobi|Android|iPhone/.test(navigator.userAgent);

async function topUp() {
  if (!me) return go(`/login?next=/topup`);
  const catalog = await api("GET", "/api/payments/products");
  if (!catalog.enabled) return show(h("p", { class: "muted" }, t("topupsOff")));
  const balance = h("strong", { id: "balance" }, "…");
  api("GET", "/api/wallet").then((w) => { balance.textContent = w.balance.toLocaleString(); });
  const area = h("div", { id: "payment" });
  show(h("div", { class: "narrow" }, h("h2", {}, t("topup")), h("p", {}, `${t("balance")}: `, balance, ` ${t("points")}`),
    h("p", { class: "muted" }, t("products")),
    h("div", { class: "row", id: "products" }, catalog.products.map((p) => h("button", { "data-product": p.id, onclick: () => buy(p, area) },
      `${p.points.toLocaleString()} ${t("points")} · ₩${p.price_krw.toLocaleString()}`))), area));
}

async function buy(product, area) {
  area.replaceChildren(h("p", { class: "muted" }, t("waiting")));
  let started;
  try { started = await api("POST", "/api/payments/kakao/ready", { product_id: product.id }); } catch (error) {
    return area.replaceChildren(h("p", { class: "error" }, error.message));
  }
  if (isPhone()) { location.href = started.redirect_mobile_url; return; }
  const qr = URL.createObjectURL(new Blob([started.qr_svg], { type: "image/svg+xml" }));
  area.replaceChildren(h("div", { class: "qr panel" }, h("p", {}, t("payPhone")), h("img", { src: qr, alt: "QR", id: "qr" }),
    h("p", {}, h("a", { href: started.redirect_pc_url, target: "_blank", rel: "noopener", id: "pay-pc" }, t("payPc"))),
    h("p", { class: "muted", id: "payment-state" }, t("waiting"))));
  await followOrder(started.order_id, area);
}

/// Polls an order until Kakao Pay's verdict is in, then shows it and the new balance.
async function followOrder(orderId, area) {
  const leaving = { stop: false };
  const previous = leave;
  leave = () => { leaving.stop = true; previous(); };
  while (!leaving.stop) {
    let order;
    try { order = await api("GET", `/api/payments/${encodeURIComponent(orderId)}`); } catch (error) {
      if (error.status === 401 || error.status === 404) return area.replaceChildren(h("p", { class: "ok" }, t("checkPc")));
    }
    if (order && order.state !== "pending") {
      const wallet = await api("GET", "/api/wallet").catch(() => null);
      const done = order.state === "approved";
      area.replaceChildren(h("div", { class: "panel", id: "payment-result" },
        h("p", { class: done ? "ok" : "error" }, done ? t("paid") : `${t("payFailed")}: ${order.detail}`),
        wallet ? h("p", {}, `${t("newBalance")}: `, h("strong", { id: "new-balance" }, wallet.balance.toLocaleString()), ` ${t("points")}`) : null));
      document.getElementById("balance")?.replaceChildren(wallet?.balance.toLocaleString() ?? "");
      return;
    }
    await new Promise((r) => setTimeout(r, 1500));
  }
}

async function paymentResult(orderId) {
  const area = h("div", { id: "payment" }, h("p", { class: "muted" }, t("waiting")));
  show(h("div", { class: "narrow" }, h("h2", {}, t("topup")), area));
  if (!me) return area.replaceChildren(h("p", { class: "ok" }, t("checkPc")));
  await followOrder(orderId, area);
}

function copyButton(text) {
  const button = h("button", { type: "button", class: "copy", onclick: async () => {
    await navigator.clipboard?.writeText(text).catch(() => {});
    button.textContent = t("copied");
  } }, t("copy"));
  return button;
}

async function dashboard() {
  if (!me) return go("/login?next=/dashboard");
  if (me.role !== "streamer" && me.role !== "admin") return show(h("p", {}, t("streamersOnly")));
  const [channels, obs] = await Promise.all([api("GET", "/api/channels"), api("GET", "/api/obs")]);
  const myChannels = h("ul", { class: "cards", id: "my-channels" });
  // Live status and viewers, kept current while the dashboard is open.
  const renderMine = (list) => myChannels.replaceChildren(...list.filter((c) => c.streamer?.id === me.id).map((c) => h("li", { class: "card" },
    h("span", { class: c.live ? "badge live" : "badge" }, c.live ? t("live") : t("offline")),
    h("h3", {}, h("a", { href: `/c/${encodeURIComponent(c.slug)}` }, c.title || c.slug)),
    c.live ? h("div", { class: "muted" }, `${c.viewers}${t("viewers")}`) : null,
    c.live ? healthOf(c) : null,
    noticeOf(c),
    h("button", { "data-rotate": c.slug, onclick: async () => showKey(await api("POST", `/api/channels/${encodeURIComponent(c.slug)}/stream-key/rotate`)) }, t("rotate")))));
  // What the box measures of each live stream, with warnings in words and OBS steps.
  const shown = new Map(); // slug → the last health drawn, so a refresh does not flicker
  const healthOf = (c) => {
    const box = h("div", { class: "health", id: `health-${c.slug}` });
    if (shown.has(c.slug)) box.replaceChildren(...shown.get(c.slug).map((n) => n.cloneNode(true)));
    api("GET", `/api/channels/${encodeURIComponent(c.slug)}/health`).then((s) => {
      const facts = [
        [s.video_codec && "H.264", s.profile, s.level].filter(Boolean).join(" "),
        s.width && `${s.width}x${s.height}`,
        s.frame_rate && `${s.frame_rate} fps`,
        `${s.bitrate_kbps_10s.toLocaleString()} Kbps`,
        s.keyframe_interval_last && `${t("keyframes")} ${s.keyframe_interval_last.toFixed(1)} s (max ${s.keyframe_interval_max.toFixed(1)} s)`,
        s.audio_codec,
      ].filter(Boolean).join(" · ");
      const say = {
        keyframe_interval: () => t("keyframeLong")(Math.max(s.keyframe_interval_last ?? 0, s.keyframe_interval_max ?? 0).toFixed(1)) + t("keyframeHow"),
        b_frames: () => t("bFrames"),
        bitrate: () => t("bitrateHigh")(s.bitrate_kbps_10s.toLocaleString()),
      };
      const nodes = [h("div", { class: "muted" }, facts),
        ...s.warnings.map((code) => h("p", { class: "warning", "data-code": code }, say[code]?.() ?? code))];
      shown.set(c.slug, nodes);
      box.replaceChildren(...nodes.map((n) => n.cloneNode(true)));
    }).catch(() => {});
    return box;
  };
  // The key was rotated while OBS kept pushing the old one: say so, for ten minutes.
  const noticeOf = (c) => {
    const box = h("div", { id: `notice-${c.slug}` });
    api("GET", `/api/channels/${encodeURIComponent(c.slug)}/notices`).then((n) => {
      const recent = (when) => when && Date.now() - new Date(when).getTime() < 10 * 60 * 1000;
      const time = (when) => new Date(when).toLocaleTimeString(lang);
      box.replaceChildren(
        ...(recent(n.old_key_seen_at) ? [h("p", { class: "warning", "data-code": "old_key" }, t("oldKey")(time(n.old_key_seen_at)))] : []),
        ...(recent(n.refused?.at) ? [h("p", { class: "warning", "data-code": "refused" }, t("refused")(time(n.refused.at), n.refused.reason))] : []));
    }).catch(() => {});
    return box;
  };
  // Admins: what the box's encoder probe chose for each rung, why the others were
  // rejected, and how each live channel's rungs are doing.
  const ladder = me.role === "admin" ? h("section", { class: "panel", id: "transcode" }) : null;
  const refreshLadder = async () => {
    const o = ladder && await api("GET", "/api/system/transcode").catch(() => null);
    if (!o) return;
    const p = o.probe;
    const rows = (p?.rungs ?? []).map((r) => h("tr", { "data-rung": r.name },
      h("th", {}, r.name), h("td", {}, `${r.width}x${r.height} · ${r.video_kbps} Kbps`),
      h("td", { class: "encoder" }, r.encoder ?? "—"),
      h("td", { class: "muted" }, r.rejected.length ? h("details", {}, h("summary", {}, `${r.rejected.length} ${t("rejected")}`),
        h("ul", {}, r.rejected.map((x) => h("li", {}, `${x.encoder}: ${x.reason}`)))) : null)));
    const live = Object.entries(o.live).flatMap(([slug, rungs]) => rungs.map((r) =>
      h("li", { "data-live": `${slug}/${r.name}`, class: r.state === "shed" ? "warning" : "" },
        `${slug} ${r.name} ${r.width}x${r.height}: ${r.encoder ?? ""} ${r.state}${r.reason ? ` (${r.reason})` : ""}`)));
    ladder.replaceChildren(h("h3", {}, t("ladder")),
      h("p", { id: "ladder-state" }, p ? `${p.enabled ? t("ladderOn") : t("ladderOff")}: ${p.why}` : "…"),
      h("table", {}, rows),
      live.length ? h("div", {}, h("h4", {}, t("liveRungs")), h("ul", { id: "live-rungs" }, live)) : null);
  };
  const refreshMine = async () => {
    const list = await api("GET", "/api/channels").catch(() => null);
    if (list) renderMine(list);
    await refreshLadder();
  };
  const keyArea = h("div", { id: "stream-key" });
  const showKey = (answer) => keyArea.replaceChildren(h("div", { class: "panel" }, h("p", { class: "error" }, t("keyOnce")),
    h("table", {}, h("tr", {}, h("th", {}, t("server")), h("td", {}, h("code", { id: "obs-server" }, answer.rtmp_url)), h("td", {}, copyButton(answer.rtmp_url))),
      h("tr", {}, h("th", {}, t("streamKey")), h("td", {}, h("code", { class: "secret", id: "key" }, answer.stream_key)), h("td", {}, copyButton(answer.stream_key))))));
  const slug = h("input", { id: "new-slug", required: true, pattern: "[a-z0-9][a-z0-9-]{0,31}" });
  const title = h("input", { id: "new-title" });
  const error = h("p", { class: "error" });
  // The newest donations to the streamer's channels, newest first.
  const mineNow = channels.filter((c) => c.streamer?.id === me.id);
  const donations = (await Promise.all(mineNow.map((c) => api("GET", `/api/channels/${encodeURIComponent(c.slug)}/donations`).catch(() => []))))
    .flat().sort((a, b) => b.id - a.id).slice(0, 20);
  show(h("h2", {}, t("dashboard")), keyArea,
    h("section", { class: "panel" }, h("h3", {}, t("obs")), h("table", { id: "obs" },
      h("tr", {}, h("th", {}, t("server")), h("td", {}, h("code", {}, obs.server)), h("td", {}, copyButton(obs.server))),
      h("tr", {}, h("th", {}, t("keyframes")), h("td", {}, `${obs.keyframe_interval_seconds} s`), h("td", {}, copyButton(String(obs.keyframe_interval_seconds)))),
      h("tr", {}, h("th", {}, t("bitrate")), h("td", {}, `${obs.video_bitrate_kbps} Kbps (${obs.resolution})`), h("td", {}, copyButton(String(obs.video_bitrate_kbps))))), h("p", { class: "muted", id: "keyframe-how" }, t("keyframeHow"))),
    h("h3", {}, t("myChannels")),
    myChannels,
    ladder,
    h("form", { class: "panel", id: "new-channel", onsubmit: async (e) => {
      e.preventDefault();
      try {
        showKey(await api("POST", "/api/channels", { slug: slug.value, title: title.value }));
        slug.value = ""; title.value = ""; error.textContent = "";
        await refreshMine();
      } catch (failure) { error.textContent = failure.message; }
    } }, h("h3", {}, t("newChannel")), h("label", { for: "new-slug" }, t("slug")), slug, h("label", { for: "new-title" }, t("title")), title, error,
    h("p", {}, h("button", { class: "primary" }, t("create")))),
    h("section", { class: "panel" }, h("h3", {}, t("recent")), donations.length
      ? h("table", { id: "donations" }, donations.map((d) => h("tr", {}, h("td", {}, d.donor_nickname), h("td", {}, `+${d.amount.toLocaleString()}`),
        h("td", {}, d.message), h("td", { class: "muted" }, new Date(d.created_at).toLocaleTimeString(lang)))))
      : h("p", { class: "muted" }, t("none"))));
  renderMine(channels);
  refreshLadder();
  const timer = setInterval(refreshMine, 3000);
  leave = () => clearInterval(timer);
}

// ---- Router: plain paths, so every page has a shareable URL. ----
async function route() {
  leave(); leave = () => {};
  document.documentElement.lang = lang;
  renderNav();
  const path = location.pathname;
  let m;
  try {
    if (path === "/" && setupNeeded) onboarding();
    else if (path === "/") await channelList();
    else if ((m = path.match(/^\/c\/([^/]+)$/))) await watch(decodeURIComponent(m[1]));
    else if (path === "/login") accountForm("login");
    else if (path === "/signup") accountForm("signup");
    else if (path === "/topup") await topUp();
    else if (path === "/dashboard") await dashboard();
    else if ((m = path.match(/^\/payments\/([^/]+)$/))) await paymentResult(decodeURIComponent(m[1]));
    else show(h("p", {}, t("notFound")));
  } catch (error) {
    show(h("p", { class: "error" }, error.message));
  }
}

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest?.("a[href^='/']");
  if (!link || link.target || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});
addEventListener("popstate", route);
// The venue's name for the header; on a fresh box, onboarding instead of the list.
let venue = null;
let setupNeeded = false;
const [setup] = await Promise.all([api("GET", "/api/onboarding").catch(() => null), whoAmI()]);
if (setup) { venue = setup.venue; setupNeeded = setup.needed; }
route();
