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
    unmute: "🔇 눌러서 소리 켜기", modeRoom: "⚡ 현장 모드 (WebRTC)", modeHls: "LL-HLS", chatLogin: "로그인하면 채팅할 수 있어요", send: "보내기",
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
    console: "운영", people: "사람", channelsTab: "채널", money: "결제·포인트", settings: "설정", box: "박스 상태", audit: "기록",
    search: "아이디나 닉네임으로 찾기", role: "역할", viewer: "시청자", created: "가입", lastSeen: "최근 접속", never: "없음",
    disabled: "사용 중지됨", disable: "사용 중지", enable: "다시 사용", resetCode: "비밀번호 재설정 코드", grant: "포인트 지급",
    reason: "이유", give: "지급", codeOnce: (h) => `${h}시간 동안 한 번만 쓸 수 있어요. 본인에게 직접 전해 주세요.`,
    owner: "주인", stop: "방송 끊기", giveTo: "다른 스트리머에게 넘기기", transfer: "넘기기", remove: "삭제", reallyRemove: "정말 삭제할까요?",
    kakao: "카카오페이", cid: "가맹점 코드 (CID)", baseUrl: "API 주소", secretKey: "시크릿 키", secretSet: "설정됨 — 바꾸려면 새 키를 붙여 넣으세요",
    secretNotSet: "한 번만 붙여 넣으면 박스만 읽을 수 있는 파일에 저장돼요", save: "저장", saved: "저장했어요", check: "연결 확인",
    topupsOn: "충전 켜짐", topupsOffShort: "충전 꺼짐", catalog: "충전 상품", addProduct: "상품 추가", productId: "상품 id", price: "가격 (원)",
    orders: "주문", ledger: "장부 확인", ledgerOk: "장부가 맞아요", export: "CSV 내보내기 (후원·충전·지급)", from: "부터", to: "까지", download: "내려받기",
    atRestart: "재시작 후 적용", live_: "바로 적용", restart: "지금 재시작", restartNote: "이 박스는 systemd가 돌리지 않아 여기서 재시작할 수 없어요.",
    restarting: "재시작하는 중… 잠시 후 새로고침하세요.", version: "버전", uptime: "가동 시간", cpu: "CPU", memory: "메모리", temperature: "온도",
    throttling: "전력·발열 제한", disk: "디스크 여유", written: "쓴 양", addresses: "네트워크 주소", obsUrl: "OBS 서버 주소", liveNow: "방송 중 채널",
    fleet: "중앙 서버 연결 (fleet)", fleetOff: "꺼짐: 아래에서 가입하거나, 카드의 부트 파티션에 commeow-fleet 폴더를 넣고 재부팅하세요.", connected: "연결됨", notConnected: "연결 안 됨",
    outbox: "보낼 이벤트", fleetJoin: "중앙 서버에 가입", fleetCsr: "키와 서명 요청 만들기", fleetCert: "서명된 박스 인증서",
    fleetSign: (id) => `이 파일을 fleet 관리자에게 보내세요: fleet-certs DIR sign ${id} ${id}.csr`, fleetEnroll: "가입", fleetBundle: "또는 가입 번들 붙여 넣기 (fleet-certs DIR bundle …)",
    fleetEnrolled: "저장했어요: 재시작하면 연결돼요", viewersNow: "시청자", fleetState: "상태", ladderHow: "켜고 끄기: 설정 탭의 transcode.enabled (재시작 후 적용)", oldestUnacked: "가장 오래 기다린 이벤트", logs: "최근 경고·오류", na: "n/a", who: "누가", what: "무엇을", when: "언제", where: "어디서",
    hasReset: "재설정 코드가 있나요?", code: "재설정 코드", newPassword: "새 비밀번호", resetDone: "비밀번호를 바꿨어요. 새 비밀번호로 로그인하세요.",
  },
  en: {
    channels: "Channels", live: "LIVE", offline: "Offline", viewers: " watching", login: "Log in",
    signup: "Sign up", logout: "Log out", topup: "Top up", dashboard: "Dashboard",
    noChannels: "No channels yet.", brb: "Be right back", brbNote: "Playback resumes by itself when the stream returns.",
    unmute: "🔇 Tap to unmute", modeRoom: "⚡ In the room (WebRTC)", modeHls: "LL-HLS", chatLogin: "Log in to chat", send: "Send",
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
    console: "Console", people: "People", channelsTab: "Channels", money: "Money", settings: "Settings", box: "Box", audit: "Audit log",
    search: "Search by username or nickname", role: "Role", viewer: "viewer", created: "Joined", lastSeen: "Last seen", never: "never",
    disabled: "disabled", disable: "Disable", enable: "Enable", resetCode: "Password reset code", grant: "Grant points",
    reason: "Reason", give: "Grant", codeOnce: (h) => `Works once within ${h} hours. Hand it to the person yourself.`,
    owner: "Owner", stop: "Stop stream", giveTo: "Give to another streamer", transfer: "Give", remove: "Remove", reallyRemove: "Really remove?",
    kakao: "Kakao Pay", cid: "Merchant code (CID)", baseUrl: "API address", secretKey: "Secret key", secretSet: "set — paste a new key to replace it",
    secretNotSet: "paste it once: the box keeps it in a file only it can read", save: "Save", saved: "Saved", check: "Check connection",
    topupsOn: "top-ups on", topupsOffShort: "top-ups off", catalog: "Top-up products", addProduct: "Add product", productId: "Product id", price: "Price (KRW)",
    orders: "Orders", ledger: "Check the ledger", ledgerOk: "The ledger balances", export: "CSV export (donations, top-ups, grants)", from: "From", to: "To", download: "Download",
    atRestart: "applies at restart", live_: "applies now", restart: "Restart now", restartNote: "systemd does not run this box's daemon, so it cannot restart from here.",
    restarting: "Restarting… reload in a moment.", version: "Version", uptime: "Uptime", cpu: "CPU", memory: "Memory", temperature: "Temperature",
    throttling: "Power and heat limits", disk: "Disk free", written: "Written", addresses: "Network addresses", obsUrl: "OBS server", liveNow: "Live channels",
    fleet: "Fleet uplink", fleetOff: "off: join below, or put the commeow-fleet folder on the card's boot partition and reboot.", connected: "connected", notConnected: "not connected",
    outbox: "Events to send", fleetJoin: "Join the fleet", fleetCsr: "Make key and signing request", fleetCert: "Signed box certificate",
    fleetSign: (id) => `Send this file to the fleet admin: fleet-certs DIR sign ${id} ${id}.csr`, fleetEnroll: "Enroll", fleetBundle: "Or paste an enrollment bundle (fleet-certs DIR bundle …)",
    fleetEnrolled: "Saved: the box connects after a restart", viewersNow: "Viewers", fleetState: "State", ladderHow: "On or off: transcode.enabled in Settings (applies at restart)", oldestUnacked: "Oldest waiting", logs: "Recent warnings and errors", na: "n/a", who: "Who", what: "What", when: "When", where: "From",
    hasReset: "Have a reset code?", code: "Reset code", newPassword: "New password", resetDone: "Password changed. Log in with the new one.",
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
    const code = error?.error?.code;
    // Expired, or issued before the account changed (an admin changed its role): a fresh
    // token carries the account as it is now, and the page redraws for it.
    if ((code === "token_expired" || code === "token_stale") && (session.access !== sentWith || await refreshTokens())) {
      response = await send();
      if (code === "token_stale") accountChanged();
    }
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

/// The account changed under an open page (a new role, say): learn it, and redraw.
let redrawing = null;
function accountChanged() {
  redrawing ??= (async () => {
    const before = me?.role;
    await whoAmI();
    redrawing = null;
    if (me?.role !== before) route();
  })();
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
    if (me.role === "admin") links.push(h("a", { href: "/admin", id: "console-link" }, t("console")));
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

  // Which way the video comes, shown on the stage; the reason WebRTC was not used in
  // its title (a long press or hover tells the curious).
  const mode = h("span", { class: "mode hidden", id: "play-mode" });
  video.parentElement.append(mode);
  const showMode = (name, why) => {
    mode.textContent = t(name === "webrtc" ? "modeRoom" : "modeHls");
    mode.dataset.mode = name;
    mode.title = why ?? "";
    mode.classList.remove("hidden");
  };
  // `?play=hls` skips WebRTC (a player comparison, a network that drops UDP badly).
  let hlsOnly = new URLSearchParams(location.search).get("play") === "hls";
  let player = null;
  let rtc = null;
  let playing = false;
  const startHls = async (why) => {
    await loadHls();
    const source = `/hls/${encodeURIComponent(slug)}/master.m3u8`;
    if (window.Hls?.isSupported()) {
      // The playlist's PART-HOLD-BACK as the target (0.6 s at the default parts), and
      // catching up at up to 1.5x after a stall or a late start: stock hls.js keeps any
      // delay it picks up. (A live sync of one target duration would hold it 2 s behind.)
      player = new window.Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10 });
      player.on(window.Hls.Events.ERROR, (_, data) => { if (data.fatal) stop(); });
      player.loadSource(source);
      player.attachMedia(video);
      // For the venue's devtools (and the browser tests): the player, its levels and ABR.
      window.commeowPlayer = player;
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = source; // Safari and iOS play HLS themselves.
    }
    showMode("hls", why);
  };
  const start = async () => {
    playing = true;
    brb.classList.add("hidden");
    let why = hlsOnly ? "?play=hls" : null;
    if (!hlsOnly) {
      try {
        rtc = await playWhep(slug, video, () => {
          // The path broke mid-stream: LL-HLS from here on, for this visit.
          hlsOnly = true;
          if (playing) { stop(); start(); }
        });
        showMode("webrtc");
      } catch (error) {
        why = error.message;
      }
    }
    if (!rtc) await startHls(why);
    video.play().catch(() => {});
  };
  const stop = () => {
    rtc?.close(); rtc = null;
    player?.destroy(); player = null;
    video.srcObject = null;
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
  leave = () => { clearInterval(timer); chat.close(); player?.destroy(); rtc?.close(); };
}

// "In the room": WebRTC through WHEP, a few tenths of a second behind the stage. Rejects
// (and the page plays LL-HLS) when the browser has no WebRTC, the box says no (its viewer
// limit, a stream WebRTC cannot carry), or no UDP path opens within a few seconds.
// `broken` is called if the path fails after it played.
async function playWhep(slug, video, broken) {
  if (!window.RTCPeerConnection) throw new Error("this browser has no WebRTC");
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  let resource = null;
  // The box hears the DELETE before the browser's goodbye on the media path, so it ends
  // the session for that reason (and answers 200, not 404 for a session already gone).
  const close = () => {
    const ending = resource ? fetch(resource, { method: "DELETE", keepalive: true }).catch(() => {}) : null;
    resource = null;
    if (ending) Promise.race([ending, new Promise((r) => setTimeout(r, 1000))]).then(() => pc.close());
    else pc.close();
  };
  try {
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (event) => stream.addTrack(event.track);
    await pc.setLocalDescription(await pc.createOffer());
    // The box is ICE-lite and offers its addresses in the answer: no need to wait for this
    // side's candidates, which its checks bring.
    const response = await fetch(`/whep/${encodeURIComponent(slug)}`, {
      method: "POST", headers: { "content-type": "application/sdp" }, body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      const body = await response.json().catch(() => null);
      throw new Error(body?.error?.message ?? `WHEP ${response.status}`);
    }
    resource = response.headers.get("location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no UDP path to the box")), 5000);
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected") { clearTimeout(timer); resolve(); }
        if (pc.connectionState === "failed") { clearTimeout(timer); reject(new Error("WebRTC failed")); }
      });
    });
    video.srcObject = stream;
    // A Wi-Fi hiccup shows as "disconnected" for a moment; "failed" is for good.
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") { close(); broken(); }
    });
    return { close, pc };
  } catch (error) {
    close();
    throw error;
  }
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
  kind === "login" ? h("p", { class: "muted" }, `${t("noAccount")} `, h("a", { href: `/signup?next=${encodeURIComponent(safeNext)}` }, t("signup")),
    " · ", h("a", { href: "/reset", id: "reset-link" }, t("hasReset")))
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
  if (me.role !== "streamer" && me.role !== "admin") {
    show(h("p", { id: "streamers-only" }, t("streamersOnly")));
    // An admin may make this account a streamer while the page is open: it then redraws.
    const timer = setInterval(() => api("GET", "/api/me").catch(() => {}), 3000);
    leave = () => clearInterval(timer);
    return;
  }
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
  const slug = h("input", { id: "new-slug", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,31}" });
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

// ---- Console: the venue operator's pages (admins). Every action is one API call to the
// same function the CLI runs; the page only shows and asks. ----
function resetForm() {
  const fields = { username: h("input", { id: "username", autocomplete: "username", required: true }),
    code: h("input", { id: "reset-code", autocomplete: "one-time-code", required: true }),
    newPassword: h("input", { id: "password", type: "password", autocomplete: "new-password", required: true }) };
  const note = h("p", { class: "error", id: "form-error" });
  show(h("form", { class: "narrow panel", id: "reset", onsubmit: async (e) => {
    e.preventDefault();
    note.className = "error"; note.textContent = "";
    try {
      await api("POST", "/api/auth/reset", { username: fields.username.value, code: fields.code.value, password: fields.newPassword.value });
      note.className = "ok"; note.textContent = t("resetDone");
    } catch (failure) { note.textContent = failure.message; }
  } }, h("h2", {}, t("hasReset")), Object.entries(fields).map(([name, input]) => [h("label", { for: input.id }, t(name)), input]),
  note, h("p", {}, h("button", { class: "primary", id: "submit" }, t("save")))));
}

const TABS = ["people", "channels", "money", "settings", "box", "audit"];
const tabName = (tab) => t({ channels: "channelsTab" }[tab] ?? tab);

/// A button that shows what its action answered (or why it failed) beside it.
function action(label, attrs, run) {
  const said = h("span", { class: "said" });
  const button = h("button", { type: "button", ...attrs, onclick: async () => {
    button.disabled = true; said.className = "said muted"; said.textContent = "…";
    try { const text = await run(); said.className = "said ok"; said.textContent = text ?? t("saved"); } catch (failure) {
      said.className = "said error"; said.textContent = failure.message;
    } finally { button.disabled = false; }
  } }, label);
  return [button, said];
}

const when = (at) => at ? new Date(at).toLocaleString(lang) : t("never");
const bytes = (n) => n == null ? t("na") : n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(0)} MB`;

async function adminConsole(tab) {
  if (!me) return go(`/login?next=/admin/${tab}`);
  if (me.role !== "admin") return show(h("p", {}, t("notFound")));
  if (!TABS.includes(tab)) return show(h("p", {}, t("notFound")));
  const body = h("div", { id: `console-${tab}` });
  show(h("nav", { class: "tabs", id: "console-tabs" }, TABS.map((name) =>
    h("a", { href: `/admin/${name}`, class: name === tab ? "chosen" : "", "data-tab": name }, tabName(name)))), body);
  await CONSOLE_PAGES[tab](body);
}

const CONSOLE_PAGES = {
  async people(body) {
    const query = h("input", { id: "people-search", type: "search", placeholder: t("search") });
    const list = h("ul", { class: "cards", id: "people" });
    const draw = async () => {
      const accounts = await api("GET", `/api/admin/users?q=${encodeURIComponent(query.value)}`);
      list.replaceChildren(...accounts.map((a) => {
        const name = encodeURIComponent(a.username);
        const role = h("select", { "data-role": a.username }, ["viewer", "streamer", "admin"].map((r) =>
          h("option", { value: r, selected: r === a.role }, t(r))));
        const [roleSave, roleSaid] = action(t("save"), { "data-save-role": a.username }, async () => {
          await api("POST", `/api/admin/users/${name}/role`, { role: role.value }); return `${t("role")}: ${t(role.value)}`;
        });
        const points = h("input", { type: "number", min: "1", placeholder: t("points"), "data-grant-points": a.username });
        const reason = h("input", { placeholder: t("reason"), "data-grant-reason": a.username });
        const [grant, grantSaid] = action(t("give"), { "data-grant": a.username }, async () => {
          const wallet = await api("POST", `/api/admin/users/${name}/grant`, { points: Number(points.value), reason: reason.value });
          points.value = ""; reason.value = "";
          return `${t("balance")} ${wallet.balance.toLocaleString()}`;
        });
        const [toggle, toggleSaid] = action(a.disabled ? t("enable") : t("disable"), { "data-disable": a.username }, async () => {
          await api("POST", `/api/admin/users/${name}/disabled`, { disabled: !a.disabled }); await draw();
        });
        const codeArea = h("p", { class: "code-once" });
        const [reset, resetSaid] = action(t("resetCode"), { "data-reset": a.username }, async () => {
          const answer = await api("POST", `/api/admin/users/${name}/reset-code`);
          codeArea.replaceChildren(h("code", { class: "secret", "data-code": a.username }, answer.code), " ", t("codeOnce")(answer.valid_hours));
          return "";
        });
        return h("li", { class: "card", "data-user": a.username },
          h("h3", {}, a.nickname, " ", h("span", { class: "muted handle" }, `@${a.username}`), a.disabled ? h("span", { class: "badge" }, t("disabled")) : null),
          h("div", { class: "muted" }, `${t("created")} ${when(a.created_at)} · ${t("lastSeen")} ${when(a.last_seen_at)}`),
          h("div", {}, `${t("balance")} ${a.balance.toLocaleString()}`, a.earnings ? ` · +${a.earnings.toLocaleString()}` : ""),
          h("div", { class: "row" }, role, roleSave, roleSaid),
          h("div", { class: "row" }, points, reason, grant, grantSaid),
          h("div", { class: "row" }, toggle, toggleSaid, reset, resetSaid), codeArea);
      }));
    };
    let typing;
    query.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(draw, 250); });
    body.replaceChildren(query, list);
    await draw();
  },

  async channels(body) {
    const list = h("ul", { class: "cards", id: "admin-channels" });
    const keyArea = h("div", { id: "stream-key" });
    const draw = async () => {
      const channels = await api("GET", "/api/admin/channels");
      list.replaceChildren(...channels.map((c) => {
        const slug = encodeURIComponent(c.slug);
        const [stop, stopSaid] = action(t("stop"), { "data-stop": c.slug, disabled: !c.live }, async () => {
          await api("POST", `/api/admin/channels/${slug}/stop`); setTimeout(draw, 500); return "";
        });
        const [rotate, rotateSaid] = action(t("rotate"), { "data-rotate": c.slug }, async () => {
          const answer = await api("POST", `/api/admin/channels/${slug}/rotate`);
          keyArea.replaceChildren(h("div", { class: "panel" }, h("p", { class: "error" }, t("keyOnce")),
            h("p", {}, h("code", { class: "secret", id: "key" }, answer.stream_key), " ", copyButton(answer.stream_key))));
          return "";
        });
        const owner = h("input", { placeholder: t("username"), "data-owner-input": c.slug });
        const [give, giveSaid] = action(t("transfer"), { "data-give": c.slug }, async () => {
          await api("POST", `/api/admin/channels/${slug}/owner`, { username: owner.value }); await draw();
        });
        let armed = false;
        const [remove, removeSaid] = action(t("remove"), { "data-remove": c.slug, class: "danger" }, async () => {
          if (!armed) { armed = true; return t("reallyRemove"); }
          await api("DELETE", `/api/admin/channels/${slug}`); await draw();
        });
        return h("li", { class: "card", "data-channel": c.slug },
          h("span", { class: c.live ? "badge live" : "badge" }, c.live ? t("live") : t("offline")),
          h("h3", {}, h("a", { href: `/c/${slug}` }, c.title || c.slug), " ", h("span", { class: "muted handle" }, c.slug)),
          h("div", { class: "muted" }, `${t("owner")}: ${c.owner ?? "—"}`, c.live ? ` · ${c.viewers}${t("viewers")} · ${(c.bitrate_kbps ?? 0).toLocaleString()} Kbps` : ""),
          h("div", { class: "row" }, stop, stopSaid, rotate, rotateSaid),
          h("div", { class: "row" }, owner, give, giveSaid),
          h("div", { class: "row" }, remove, removeSaid));
      }));
    };
    body.replaceChildren(keyArea, list);
    await draw();
    const timer = setInterval(() => { if (!list.contains(document.activeElement)) draw().catch(() => {}); }, 5000);
    leave = () => clearInterval(timer);
  },

  async money(body) {
    const setup = await api("GET", "/api/admin/kakao-pay");
    const cid = h("input", { id: "kakao-cid", value: setup.cid });
    const baseUrl = h("input", { id: "kakao-base-url", value: setup.base_url });
    const secret = h("input", { id: "kakao-secret", type: "password", autocomplete: "off", placeholder: setup.secret_key_set ? t("secretSet") : t("secretNotSet") });
    const state = h("span", { id: "kakao-state", class: setup.enabled ? "badge live" : "badge" }, setup.enabled ? t("topupsOn") : t("topupsOffShort"));
    const [save, saveSaid] = action(t("save"), { id: "kakao-save", class: "primary" }, async () => {
      const answer = await api("PUT", "/api/admin/kakao-pay", { cid: cid.value, base_url: baseUrl.value, secret_key: secret.value || null });
      secret.value = ""; secret.placeholder = t("secretSet");
      state.className = answer.enabled ? "badge live" : "badge"; state.textContent = answer.enabled ? t("topupsOn") : t("topupsOffShort");
    });
    const [check, checkSaid] = action(t("check"), { id: "kakao-check" }, async () => {
      const answer = await api("POST", "/api/admin/kakao-pay/check");
      if (!answer.ok) throw new Error(answer.message);
      return answer.message;
    });
    // The catalog: rows of id, points, price.
    const rows = h("tbody", { id: "products-edit" });
    const productRow = (p = { id: "", points: "", price_krw: "" }) => {
      const row = h("tr", {}, h("td", {}, h("input", { value: p.id, "data-field": "id" })),
        h("td", {}, h("input", { type: "number", value: p.points, "data-field": "points" })),
        h("td", {}, h("input", { type: "number", value: p.price_krw, "data-field": "price_krw" })),
        h("td", {}, h("button", { type: "button", onclick: () => row.remove() }, "✕")));
      return row;
    };
    rows.replaceChildren(...setup.products.map(productRow));
    const [saveProducts, productsSaid] = action(t("save"), { id: "products-save", class: "primary" }, async () => {
      const products = [...rows.children].map((row) => {
        const get = (f) => row.querySelector(`[data-field="${f}"]`).value;
        return { id: get("id"), points: Number(get("points")), price_krw: Number(get("price_krw")) };
      });
      await api("PUT", "/api/admin/kakao-pay/products", products);
    });
    const [ledger, ledgerSaid] = action(t("ledger"), { id: "ledger-check" }, async () => {
      const answer = await api("POST", "/api/admin/ledger/check");
      if (!answer.balanced) throw new Error(answer.problems.join("; "));
      return t("ledgerOk");
    });
    const today = new Date().toISOString().slice(0, 10);
    const from = h("input", { id: "export-from", type: "date", value: `${today.slice(0, 8)}01` });
    const to = h("input", { id: "export-to", type: "date", value: today });
    const [download, downloadSaid] = action(t("download"), { id: "export-download" }, async () => {
      const response = await fetch(`/api/admin/export.csv?from=${from.value}&to=${to.value}`, { headers: { authorization: `Bearer ${session.access}` } });
      if (!response.ok) throw new Error((await response.json().catch(() => null))?.error?.message ?? response.statusText);
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: `commeow-${from.value}-${to.value}.csv` });
      document.body.append(link); link.click(); link.remove();
      return "";
    });
    const orders = await api("GET", "/api/admin/orders");
    body.replaceChildren(
      h("section", { class: "panel", id: "kakao-setup" }, h("h3", {}, t("kakao"), " ", state),
        h("label", { for: "kakao-cid" }, t("cid")), cid, h("label", { for: "kakao-base-url" }, t("baseUrl")), baseUrl,
        h("label", { for: "kakao-secret" }, t("secretKey")), secret, h("p", { class: "row" }, save, saveSaid), h("p", { class: "row" }, check, checkSaid)),
      h("section", { class: "panel" }, h("h3", {}, t("catalog")),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, t("productId")), h("th", {}, t("points")), h("th", {}, t("price")), h("th", {}))), rows),
        h("p", { class: "row" }, h("button", { type: "button", id: "product-add", onclick: () => rows.append(productRow()) }, t("addProduct")), saveProducts, productsSaid)),
      h("section", { class: "panel" }, h("h3", {}, t("ledger")), h("p", { class: "row" }, ledger, ledgerSaid)),
      h("section", { class: "panel" }, h("h3", {}, t("export")), h("div", { class: "row" }, h("label", { for: "export-from" }, t("from")), from, h("label", { for: "export-to" }, t("to")), to),
        h("p", { class: "row" }, download, downloadSaid)),
      h("section", { class: "panel" }, h("h3", {}, t("orders")), orders.length ? h("table", { id: "orders" }, orders.map((o) => h("tr", { "data-order": o.order_id },
        h("td", {}, when(o.created_at)), h("td", {}, o.user), h("td", {}, `${o.points.toLocaleString()} / ₩${o.price_krw.toLocaleString()}`),
        h("td", { class: o.state === "approved" ? "ok" : o.state === "pending" ? "muted" : "error" }, o.state)))) : h("p", { class: "muted" }, t("none"))));
  },

  async settings(body) {
    const now = await api("GET", "/api/admin/settings");
    const venue = h("input", { id: "venue-name", value: now.venue_name ?? "" });
    const inputs = now.settings.map((s) => ({ s, input: h("input", { id: `setting-${s.key}`, "data-key": s.key, value: s.value ?? "" }) }));
    const restartArea = h("div", { id: "restart" });
    const [save, said] = action(t("save"), { id: "settings-save", class: "primary" }, async () => {
      const values = Object.fromEntries(inputs.filter(({ s, input }) => String(s.value ?? "") !== input.value).map(({ s, input }) => [s.key, input.value]));
      const answer = await api("PUT", "/api/admin/settings", { venue_name: venue.value, values });
      inputs.forEach(({ s, input }) => { s.value = input.value; });
      if (venue.value) { document.querySelector(".brand").textContent = venue.value; }
      if (answer.restart_needed) restartArea.replaceChildren(restartButton(now.restart_available));
    });
    body.replaceChildren(h("section", { class: "panel", id: "settings" },
      h("label", { for: "venue-name" }, `${t("venueName")} · ${t("live_")}`), venue,
      inputs.map(({ s, input }) => [h("label", { for: input.id }, `${s.key} · ${s.applies === "live" ? t("live_") : t("atRestart")}`), input]),
      h("p", { class: "row" }, save, said), restartArea));
    restartArea.replaceChildren(restartButton(now.restart_available));
  },

  async box(body) {
    const live = h("div", { id: "box-live" });
    body.replaceChildren(live, fleetEnrollment());
    const draw = async () => {
      const s = await api("GET", "/api/admin/health");
      const b = s.box;
      const uptime = (n) => n == null ? t("na") : `${Math.floor(n / 86400)}d ${Math.floor(n % 86400 / 3600)}h ${Math.floor(n % 3600 / 60)}m`;
      const facts = [
        [t("version"), b.version], [t("uptime"), uptime(b.uptime_seconds)],
        [t("cpu"), b.cpu_percent == null ? t("na") : `${b.cpu_percent.toFixed(0)} % · load ${b.load_average?.map((l) => l.toFixed(2)).join(" ") ?? t("na")} · ${b.cores} cores`],
        [t("memory"), `${bytes(b.rss_bytes)} / ${bytes(b.memory_available_bytes)} free of ${bytes(b.memory_total_bytes)}`],
        [t("temperature"), b.temperature_celsius == null ? t("na") : `${b.temperature_celsius.toFixed(1)} °C`],
        [t("throttling"), b.throttled == null ? t("na") : (b.throttled.now.join(", ") || "none") + (b.throttled.since_boot.length ? ` (since boot: ${b.throttled.since_boot.join(", ")})` : "")],
        [t("disk"), `${bytes(b.disk_free_bytes)} / ${bytes(b.disk_total_bytes)}`], [t("written"), bytes(b.bytes_written)],
        [t("addresses"), b.addresses.join(" · ") || t("na")], [t("obsUrl"), s.obs_server],
        [t("liveNow"), s.live_channels.join(", ") || "—"], [t("viewersNow"), String(s.viewers)],
      ];
      const relay = s.fleet.relay;
      const fleet = s.fleet.enabled ? [
        [t("fleet"), `${s.fleet.box_id} → ${s.fleet.broker}`],
        [t("fleetState"), relay?.connected ? t("connected") : t("notConnected")],
        [t("outbox"), String(relay?.outbox_depth ?? t("na"))],
        [t("oldestUnacked"), relay?.oldest_unacked_seconds == null ? "—" : `${relay.oldest_unacked_seconds.toFixed(0)} s`],
      ] : [[t("fleetState"), t("fleetOff")]];
      const ladder = await api("GET", "/api/system/transcode").catch(() => null);
      const rungs = (ladder?.probe?.rungs ?? []).map((r) => h("li", {}, `${r.name} ${r.width}x${r.height} ${r.video_kbps} Kbps: ${r.encoder ?? t("rejected")}`));
      live.replaceChildren(
        h("section", { class: "panel" }, h("h3", {}, t("box")), h("table", { id: "health" }, facts.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
        h("section", { class: "panel" }, h("h3", {}, t("fleet")), h("table", { id: "fleet" }, fleet.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
        h("section", { class: "panel", id: "ladder" }, h("h3", {}, t("ladder")),
          h("p", {}, ladder?.probe ? `${ladder.probe.enabled ? t("ladderOn") : t("ladderOff")}: ${ladder.probe.why}` : "…"), h("ul", {}, rungs),
          h("p", { class: "muted" }, h("a", { href: "/admin/settings" }, t("ladderHow")))),
        h("section", { class: "panel" }, h("h3", {}, t("logs")), s.logs.length ? h("ol", { id: "logs", class: "logs" }, s.logs.slice().reverse().map((l) =>
          h("li", { class: l.level === "error" ? "error" : "warning" }, `${when(l.at)} ${l.message}`))) : h("p", { class: "muted" }, t("none"))));
    };
    await draw();
    const timer = setInterval(() => draw().catch(() => {}), 5000);
    leave = () => clearInterval(timer);
  },

  async audit(body) {
    const rows = await api("GET", "/api/admin/audit");
    body.replaceChildren(rows.length ? h("ul", { class: "cards", id: "audit" }, rows.map((r) => h("li", { class: "card", "data-action": r.action },
      h("div", {}, h("strong", {}, r.action), " ", r.target, r.detail ? ` · ${r.detail}` : ""),
      h("div", { class: "muted" }, `${when(r.at)} · ${r.actor} · ${r.address}`)))) : h("p", { class: "muted" }, t("none")));
  },
};

/// Joining the fleet from the page: the box makes its key and a request (the key never
/// leaves it), the fleet admin signs it, the operator pastes the certificate and CA; or a
/// bundle pasted whole. On at the next restart.
function fleetEnrollment() {
  const broker = h("input", { id: "fleet-broker", placeholder: "mqtts://fleet.example:8883" });
  const boxId = h("input", { id: "fleet-box-id", placeholder: "hall-1" });
  const csrArea = h("div", { id: "fleet-csr" });
  const [makeCsr, csrSaid] = action(t("fleetCsr"), { id: "fleet-make-csr" }, async () => {
    const answer = await api("POST", "/api/admin/fleet/csr", { box_id: boxId.value });
    const file = URL.createObjectURL(new Blob([answer.csr], { type: "application/pkcs10" }));
    csrArea.replaceChildren(h("p", {}, h("a", { href: file, download: `${boxId.value}.csr`, id: "fleet-csr-download" }, `${boxId.value}.csr`), " · ", copyButton(answer.csr)),
      h("p", { class: "muted" }, t("fleetSign")(boxId.value)));
    return "";
  });
  const ca = h("textarea", { id: "fleet-ca", rows: 4, placeholder: "-----BEGIN CERTIFICATE----- (CA)" });
  const cert = h("textarea", { id: "fleet-cert", rows: 4, placeholder: "-----BEGIN CERTIFICATE----- (box)" });
  const bundle = h("textarea", { id: "fleet-bundle", rows: 4, placeholder: "[fleet] … -----BEGIN …" });
  const restartArea = h("div");
  const enrolled = (answer) => { restartArea.replaceChildren(restartButton(answer.restart_available)); return t("fleetEnrolled"); };
  const [enroll, enrollSaid] = action(t("fleetEnroll"), { id: "fleet-enroll", class: "primary" }, async () =>
    enrolled(await api("PUT", "/api/admin/fleet", { broker: broker.value, box_id: boxId.value, ca_pem: ca.value, cert_pem: cert.value })));
  const [paste, pasteSaid] = action(t("fleetEnroll"), { id: "fleet-enroll-bundle" }, async () =>
    enrolled(await api("PUT", "/api/admin/fleet", { bundle: bundle.value })));
  return h("section", { class: "panel", id: "fleet-join" }, h("h3", {}, t("fleetJoin")),
    h("label", { for: "fleet-broker" }, "Broker"), broker, h("label", { for: "fleet-box-id" }, "Box id"), boxId,
    h("p", { class: "row" }, makeCsr, csrSaid), csrArea,
    h("label", { for: "fleet-ca" }, "CA"), ca, h("label", { for: "fleet-cert" }, t("fleetCert")), cert,
    h("p", { class: "row" }, enroll, enrollSaid),
    h("label", { for: "fleet-bundle" }, t("fleetBundle")), bundle, h("p", { class: "row" }, paste, pasteSaid), restartArea);
}

function restartButton(available) {
  if (!available) return h("p", { class: "muted", id: "restart-note" }, t("restartNote"));
  const [button, said] = action(t("restart"), { id: "restart-button" }, async () => {
    await api("POST", "/api/admin/restart"); return t("restarting");
  });
  return h("p", { class: "row" }, button, said);
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
    else if (path === "/reset") resetForm();
    else if ((m = path.match(/^\/admin(?:\/([a-z]+))?$/))) await adminConsole(m[1] ?? "people");
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
