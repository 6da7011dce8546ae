// The web app end to end in headless Chromium, against the real daemon with a real ffmpeg
// push: playback, chat between two phones, donations, a Kakao Pay top-up through the fake,
// "be right back" and resume, text that looks like HTML, and phone-sized screenshots.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { ARTIFACTS, Daemon, FakeKakaoPay, PASSWORD, assertPlays, browser, phone, push } from "./harness.mjs";

let chromium;
before(async () => { chromium = await browser(); });
after(async () => { await chromium?.close(); });

/// A daemon with streamer `djay` owning channel `stage`, and a push on it.
async function venue(config = "") {
  const daemon = await Daemon.start(config);
  const djay = await daemon.user("djay", "streamer");
  const channel = await daemon.api("POST", "/api/channels", { slug: "stage", title: "금요일 밤 라이브" }, djay.access_token);
  return { daemon, djay, channel };
}

test("a viewer watches, chats with another, and an anonymous viewer only reads", async () => {
  const { daemon, channel } = await venue();
  const pusher = push(`${daemon.rtmp}/${channel.stream_key}`);
  const anonymous = await phone(chromium, daemon);
  const viewer = await phone(chromium, daemon);
  try {
    // The viewer logs in through the page.
    await daemon.user("minji");
    await viewer.page.goto(`${daemon.base}/login?next=/c/stage`);
    await viewer.page.fill("#username", "minji");
    await viewer.page.fill("#password", PASSWORD);
    await viewer.page.click("#submit");
    await viewer.page.waitForURL(`${daemon.base}/c/stage`);
    await anonymous.page.goto(`${daemon.base}/`);
    await anonymous.page.locator('a[data-slug="stage"] .badge.live').waitFor({ timeout: 30000 });
    await anonymous.page.screenshot({ path: join(ARTIFACTS, "channel-list.png") });
    await anonymous.page.click('a[data-slug="stage"]');
    await anonymous.page.waitForURL(`${daemon.base}/c/stage`);

    await assertPlays(viewer.page);
    await assertPlays(anonymous.page);
    assert.equal(await anonymous.page.locator("#unmute").isVisible(), true, "muted autoplay offers tap-to-unmute");
    await anonymous.page.click("#unmute");
    assert.equal(await anonymous.page.evaluate(() => document.getElementById("video").muted), false);

    // Chat both ways: the viewer speaks, the anonymous phone reads and cannot send.
    await viewer.page.fill("#chat-input", "안녕하세요 여러분");
    await viewer.page.click("#chat-send");
    await anonymous.page.locator("#chat-lines li", { hasText: "안녕하세요 여러분" }).waitFor();
    assert.equal(await anonymous.page.locator("#chat-input").count(), 0, "no input for anonymous viewers");
    assert.match(await anonymous.page.locator("#chat-login").innerText(), /로그인/);
    await viewer.page.locator("#viewer-count", { hasText: "2" }).waitFor();

    // Text that looks like HTML is shown as text and runs nothing.
    const attack = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>';
    await viewer.page.fill("#chat-input", attack);
    await viewer.page.click("#chat-send");
    const line = anonymous.page.locator("#chat-lines li .text", { hasText: "<script>" });
    await line.waitFor();
    assert.equal(await line.innerText(), attack);
    assert.equal(await anonymous.page.locator("#chat-lines b, #chat-lines img, #chat-lines script").count(), 0);
    assert.equal(await anonymous.page.evaluate(() => window.pwned), undefined);
    await anonymous.page.screenshot({ path: join(ARTIFACTS, "watch.png") });
    // Korean by default; English one tap away.
    await anonymous.page.click("#lang");
    assert.match(await anonymous.page.locator("#chat-login").innerText(), /Log in to chat/);
    assert.deepEqual(viewer.page.errors.concat(anonymous.page.errors), []);
  } finally {
    await pusher.stop();
    await viewer.context.close();
    await anonymous.context.close();
    await daemon.close();
  }
});

test("a donation from one phone appears in the other phone's chat, and they talk", async () => {
  const { daemon, channel, djay } = await venue();
  const pusher = push(`${daemon.rtmp}/${channel.stream_key}`);
  const fan = await daemon.user("fan");
  await daemon.cli(["wallet", "grant", "fan", "20000", "--reason", "welcome"]);
  const donor = await phone(chromium, daemon, fan);
  const watcher = await phone(chromium, daemon, await daemon.user("minji"));
  try {
    await watcher.page.goto(`${daemon.base}/c/stage`);
    await donor.page.goto(`${daemon.base}/c/stage`);
    await donor.page.locator("#balance", { hasText: "20,000" }).waitFor();
    await donor.page.click('button[data-amount="5000"]');
    await donor.page.fill("#donation-message", "화이팅!");
    await donor.page.click("#donate-send");
    await donor.page.locator("#donation-result.ok").waitFor();
    await donor.page.locator("#balance", { hasText: "15,000" }).waitFor();
    const line = watcher.page.locator("#chat-lines li.donation");
    await line.waitFor();
    const text = await line.innerText();
    assert.match(text, /fan/);
    assert.match(text, /5,000/);
    assert.match(text, /화이팅!/);
    // Two logged-in phones chatting with each other.
    await watcher.page.fill("#chat-input", "고마워요 fan님");
    await watcher.page.click("#chat-send");
    await donor.page.locator("#chat-lines li", { hasText: "고마워요 fan님" }).waitFor();
    await donor.page.fill("#chat-input", "천만에요");
    await donor.page.click("#chat-send");
    await watcher.page.locator("#chat-lines li", { hasText: "천만에요" }).waitFor();
    // The streamer's dashboard lists it: who, how much, what they said.
    const streamer = await phone(chromium, daemon, djay);
    await streamer.page.goto(`${daemon.base}/dashboard`);
    const row = streamer.page.locator("#donations tr", { hasText: "fan" });
    await row.waitFor();
    assert.match(await row.innerText(), /\+5,000[\s\S]*화이팅!/);
    await streamer.context.close();
  } finally {
    await pusher.stop();
    await donor.context.close();
    await watcher.context.close();
    await daemon.close();
  }
});

test("a top-up through Kakao Pay ends with the new balance on screen", async () => {
  const kakao = await FakeKakaoPay.start();
  const { daemon } = await venue(`[kakao_pay]\nbase_url = "${kakao.base}"\nsecret_key_file = "${kakao.secretFile}"\n`);
  const fan = await daemon.user("fan");
  const pc = await phone(chromium, daemon, fan);
  try {
    await pc.page.goto(`${daemon.base}/topup`);
    await pc.page.click('button[data-product="points-5000"]');
    await pc.page.locator("#qr").waitFor();
    // The viewer pays on Kakao Pay's page (here the PC page; a phone scanning the QR code
    // gets the same flow), which sends the browser back to the box.
    const href = await pc.page.locator("#pay-pc").getAttribute("href");
    assert.ok(href.startsWith(kakao.base), href);
    const payer = await pc.context.newPage();
    await payer.goto(href);
    await payer.click("#pay");
    await payer.waitForURL(/\/payments\//);
    await payer.locator("#payment-result .ok").waitFor();
    // The page that showed the QR code learns the result by itself.
    await pc.page.locator("#new-balance", { hasText: "5,000" }).waitFor({ timeout: 15000 });
    const wallet = await daemon.api("GET", "/api/wallet", null, fan.access_token);
    assert.equal(wallet.balance, 5000);

    // On a phone the page goes straight to Kakao Pay's mobile page, and comes back.
    const handset = await chromium.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, locale: "ko-KR" });
    await handset.addInitScript(([access, refresh]) => {
      localStorage.setItem("access_token", access);
      localStorage.setItem("refresh_token", refresh);
    }, [fan.access_token, fan.refresh_token]);
    const mobile = await handset.newPage();
    await mobile.goto(`${daemon.base}/topup`);
    await mobile.click('button[data-product="points-1000"]');
    await mobile.waitForURL(/\/mInfo$/);
    await mobile.click("#pay");
    await mobile.locator("#new-balance", { hasText: "6,000" }).waitFor({ timeout: 15000 });
    await handset.close();
  } finally {
    await pc.context.close();
    await daemon.close();
    await kakao.close();
  }
});

test("the watch page says 'be right back' when the push stops and resumes when it returns", async () => {
  const { daemon, channel } = await venue("[hls]\nlinger_seconds = 1\n");
  let pusher = push(`${daemon.rtmp}/${channel.stream_key}`);
  const viewer = await phone(chromium, daemon);
  try {
    await viewer.page.goto(`${daemon.base}/c/stage`);
    await assertPlays(viewer.page);
    await pusher.stop();
    await viewer.page.locator("#brb").waitFor({ state: "visible", timeout: 20000 });
    pusher = push(`${daemon.rtmp}/${channel.stream_key}`);
    await viewer.page.locator("#brb").waitFor({ state: "hidden", timeout: 30000 });
    await assertPlays(viewer.page);
  } finally {
    await pusher.stop();
    await viewer.context.close();
    await daemon.close();
  }
});

test("the streamer dashboard shows the key once, the OBS settings and live status", async () => {
  const daemon = await Daemon.start();
  const djay = await daemon.user("djay", "streamer");
  const streamer = await phone(chromium, daemon, djay);
  try {
    await streamer.page.goto(`${daemon.base}/dashboard`);
    await streamer.page.fill("#new-slug", "stage");
    await streamer.page.fill("#new-title", "Friday night");
    await streamer.page.click("#new-channel button");
    const key = await streamer.page.locator("#key").innerText();
    assert.match(key, /\S{20,}/);
    const server = await streamer.page.locator("#obs-server").innerText();
    assert.equal(server, daemon.rtmp);
    // OBS's default Simple mode has no keyframe field: the page says where it hides.
    assert.match(await streamer.page.locator("#keyframe-how").innerText(), /keyint=60/);
    await streamer.page.locator('#my-channels [data-rotate="stage"]').waitFor();
    const pusher = push(`${server}/${key}`);
    try {
      // Live status arrives without a reload.
      await streamer.page.locator("#my-channels .badge.live").waitFor({ timeout: 30000 });
      await streamer.page.reload();
      await streamer.page.locator("#my-channels .badge.live").waitFor();
      assert.equal(await streamer.page.locator("#key").count(), 0, "the key is not shown again");
      await streamer.page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
    } finally {
      await pusher.stop();
    }
  } finally {
    await streamer.context.close();
    await daemon.close();
  }
});

test("a fresh box's first visitor types the setup code, names the venue and lands on the dashboard", async () => {
  const secrets = mkdtempSync(join(tmpdir(), "commeow-setup-"));
  writeFileSync(join(secrets, "setup-code"), "KX7QP-M4RZ9\n");
  const daemon = await Daemon.start(`[onboarding]\nsetup_code_file = "${join(secrets, "setup-code")}"\n`);
  const visitor = await phone(chromium, daemon);
  try {
    await visitor.page.goto(`${daemon.base}/`);
    await visitor.page.locator("#onboarding").waitFor();
    await visitor.page.screenshot({ path: join(ARTIFACTS, "onboarding.png"), fullPage: true });
    await visitor.page.fill("#setup-code", "wrong-code1");
    await visitor.page.fill("#venue-name", "고양이 라운지");
    await visitor.page.fill("#username", "boss");
    await visitor.page.fill("#password", PASSWORD);
    await visitor.page.click("#submit");
    await visitor.page.locator("#form-error:not(:empty)").waitFor();
    // Right after a wrong code the box asks to wait a second; the visitor presses again.
    await visitor.page.fill("#setup-code", "kx7qp m4rz9");
    for (let attempt = 0; !visitor.page.url().endsWith("/dashboard"); attempt++) {
      assert.ok(attempt < 20, `onboarding never went through: ${await visitor.page.locator("#form-error").innerText()}`);
      await visitor.page.click("#submit");
      await visitor.page.waitForURL(`${daemon.base}/dashboard`, { timeout: 500 }).catch(() => {});
    }
    assert.equal(await visitor.page.locator(".brand").innerText(), "고양이 라운지");
    assert.equal(await visitor.page.locator("#me").innerText(), "boss");
    // Set up: the next visitor gets the channel list, under the venue's name.
    const next = await phone(chromium, daemon);
    await next.page.goto(`${daemon.base}/`);
    await next.page.locator("#channels").waitFor();
    assert.equal(await next.page.locator(".brand").innerText(), "고양이 라운지");
    assert.deepEqual([...visitor.page.errors.filter((e) => !e.includes("/api/onboarding")), ...next.page.errors], []);
    await next.context.close();
  } finally {
    await visitor.context.close();
    await daemon.close();
    rmSync(secrets, { recursive: true, force: true });
  }
});

test("a streamer whose access token expired stays logged in when the dashboard makes several calls at once", async () => {
  const daemon = await Daemon.start("[auth]\naccess_token_seconds = 3\n");
  const djay = await daemon.user("djay", "streamer");
  // Three channels: the dashboard asks for each one's donations at once, with the token.
  for (const slug of ["stage", "lounge", "patio"]) await daemon.api("POST", "/api/channels", { slug, title: slug }, djay.access_token);
  const streamer = await phone(chromium, daemon, djay);
  const refreshes = [];
  streamer.page.on("request", (request) => {
    if (request.url().endsWith("/api/auth/refresh")) refreshes.push(JSON.parse(request.postData()).refresh_token);
  });
  const refused = [];
  streamer.page.on("response", (response) => {
    if (response.url().endsWith("/api/auth/refresh") && response.status() !== 200) refused.push(response.status());
  });
  try {
    await streamer.page.goto(`${daemon.base}/dashboard`);
    await streamer.page.locator("#my-channels .card").first().waitFor();
    for (let round = 0; round < 2; round++) {
      // Until the page's access token has expired (the dashboard's own polling may renew it
      // meanwhile; the wait follows whichever token the page holds).
      await streamer.page.waitForFunction(() => {
        const token = localStorage.getItem("access_token");
        // The box counts whole seconds: past exp by more than one.
        return token && JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000 + 1100 < Date.now();
      }, null, { timeout: 15000, polling: 50 });
      const expired = await streamer.page.evaluate(() => localStorage.getItem("access_token"));
      // Opening the dashboard again fires its calls together, all with the expired token.
      await streamer.page.click('nav a[href="/dashboard"]');
      await streamer.page.waitForFunction((old) => localStorage.getItem("access_token") !== old, expired, { timeout: 10000 })
        .catch((e) => { throw new Error(`${e.message}; refreshes ${refreshes.length}, refused ${refused}, errors ${streamer.page.errors}`); });
      await streamer.page.locator("#my-channels .card").first().waitFor();
    }
    assert.equal(streamer.page.url(), `${daemon.base}/dashboard`);
    assert.equal(await streamer.page.locator("#me").innerText(), "djay", "still logged in");
    assert.ok(refreshes.length >= 2, `the page refreshed its tokens: ${refreshes.length}`);
    assert.equal(new Set(refreshes).size, refreshes.length, "each refresh token was sent once");
    assert.deepEqual(refused, []);
    // The expired token's 401s are logged by Chromium as failed loads; nothing else may be.
    assert.deepEqual(streamer.page.errors.filter((e) => !e.includes("status of 401")), []);
  } finally {
    await streamer.context.close();
    await daemon.close();
  }
});

test("in the chat the streamer wears a badge, and a viewer nicknamed like the streamer does not", async () => {
  const { daemon, djay } = await venue();
  await daemon.cli(["user", "add", "mallory", "--role", "viewer", "--password-stdin", "--nickname", "djay"], `${PASSWORD}\n`);
  const lookalike = await daemon.api("POST", "/api/auth/login", { username: "mallory", password: PASSWORD });
  const streamer = await phone(chromium, daemon, djay);
  const impostor = await phone(chromium, daemon, lookalike);
  const watcher = await phone(chromium, daemon);
  try {
    for (const p of [streamer, impostor, watcher]) await p.page.goto(`${daemon.base}/c/stage`);
    for (const [p, text] of [[streamer, "from the real djay"], [impostor, "from the fake djay"]]) {
      await p.page.locator("#chat-input").waitFor();
      await p.page.fill("#chat-input", text);
      await p.page.click("#chat-send");
    }
    const real = watcher.page.locator("#chat-lines li", { hasText: "from the real djay" });
    const fake = watcher.page.locator("#chat-lines li", { hasText: "from the fake djay" });
    await real.waitFor();
    await fake.waitFor();
    assert.equal(await real.locator(".who .badge.streamer").count(), 1, "the streamer's badge");
    assert.equal(await fake.locator(".who .badge").count(), 0, "no badge for the lookalike");
    assert.match(await fake.locator(".who").innerText(), /@mallory/, "the lookalike's username shows");
    assert.doesNotMatch(await real.locator(".who").innerText(), /@/);
    await watcher.page.screenshot({ path: join(ARTIFACTS, "chat-badges.png") });
    // A nickname that turns text around is refused at sign-up.
    const refused = await fetch(`${daemon.base}/api/auth/signup`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "trick", password: PASSWORD, nickname: "djay\u202Eyajd" }),
    });
    assert.equal(refused.status, 400);
    assert.deepEqual([...streamer.page.errors, ...impostor.page.errors, ...watcher.page.errors], []);
  } finally {
    for (const p of [streamer, impostor, watcher]) await p.context.close();
    await daemon.close();
  }
});

test("the dashboard warns about OBS's default 8-second keyframes with the steps, and not about 2 seconds", async () => {
  const daemon = await Daemon.start();
  const djay = await daemon.user("djay", "streamer");
  const simple = await daemon.api("POST", "/api/channels", { slug: "simple", title: "Simple mode" }, djay.access_token);
  const tuned = await daemon.api("POST", "/api/channels", { slug: "tuned", title: "Tuned" }, djay.access_token);
  const long = push(`${daemon.rtmp}/${simple.stream_key}`, 60, 250);
  const short = push(`${daemon.rtmp}/${tuned.stream_key}`, 60, 60);
  const streamer = await phone(chromium, daemon, djay);
  try {
    await streamer.page.goto(`${daemon.base}/dashboard`);
    const warning = streamer.page.locator('#health-simple .warning[data-code="keyframe_interval"]');
    await warning.waitFor({ timeout: 30000 });
    assert.match(await warning.innerText(), /8\.\d/);
    assert.match(await warning.innerText(), /keyint=60/, "the Simple-mode steps");
    await streamer.page.locator("#health-tuned .muted").first().waitFor();
    assert.match(await streamer.page.locator("#health-tuned").innerText(), /H\.264/);
    assert.equal(await streamer.page.locator("#health-tuned .warning").count(), 0, "no warning at 2 s");
    await streamer.page.screenshot({ path: join(ARTIFACTS, "dashboard-health.png"), fullPage: true });
    assert.deepEqual(streamer.page.errors, []);
  } finally {
    await long.stop();
    await short.stop();
    await streamer.context.close();
    await daemon.close();
  }
});

/// A box running the ladder on a 480p push at 3 Mb/s: rungs 360p (800 kbps) and 240p
/// (400 kbps) below it. Small pictures, so two cores carry the push, the ladder and
/// Chromium's decoding with room to spare.
const LADDER = `[transcode]
enabled = true
[[transcode.ladder]]
name = "360p"
height = 360
video_kbps = 800
[[transcode.ladder]]
name = "240p"
height = 240
video_kbps = 400
`;
const LADDER_PUSH = { size: "854x480", bitrate: "3M" };

test("hls.js lists the source and two rungs, switches between them without a stall, and ABR steps down on a slow link", async () => {
  const { daemon, channel } = await venue(LADDER);
  const pusher = push(`${daemon.rtmp}/${channel.stream_key}`, 120, 60, LADDER_PUSH);
  const viewer = await phone(chromium, daemon);
  try {
    // The rungs join the master once each has a segment, and hls.js reads the master once:
    // the viewer arrives when all three are offered.
    for (let tries = 0; ; tries++) {
      const master = await fetch(`${daemon.base}/hls/stage/master.m3u8`).then((r) => r.text()).catch(() => "");
      if ((master.match(/#EXT-X-STREAM-INF/g) ?? []).length === 3) break;
      assert.ok(tries < 60, `the master never offered three variants: ${master}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    // hls.js, not WebRTC (which plays one rendition): the page's own switch.
    await viewer.page.goto(`${daemon.base}/c/stage?play=hls`);
    await assertPlays(viewer.page);
    assert.equal(await viewer.page.locator("#play-mode").getAttribute("data-mode"), "hls");
    // Every stall hls.js sees is counted from here on.
    await viewer.page.evaluate(() => {
      window.stalls = 0;
      window.stallLog = [];
      window.waited = 0;
      const v = document.getElementById("video");
      let since = null;
      v.addEventListener("waiting", () => { since = performance.now(); });
      v.addEventListener("playing", () => { if (since !== null) { window.waited += performance.now() - since; since = null; } });
      window.commeowPlayer.on(window.Hls.Events.ERROR, (_, d) => {
        if (d.details !== "bufferStalledError") return;
        window.stalls += 1;
        window.stallLog.push({ t: document.getElementById("video").currentTime, level: window.commeowPlayer.currentLevel });
      });
    });
    assert.equal(await viewer.page.evaluate(() => window.commeowPlayer.levels.length), 3);
    const heights = await viewer.page.evaluate(() => window.commeowPlayer.levels.map((l) => l.height));
    assert.deepEqual(heights, [240, 360, 480], "hls.js orders levels by bandwidth");
    // Forced switches 0 -> 2 -> 1, at the next segment (loadLevel: no buffer flushed, the
    // seamless switch aligned segments allow): the picture changes size, and time keeps
    // running without a stall.
    for (const level of [0, 2, 1]) {
      const before = await viewer.page.evaluate((l) => { window.commeowPlayer.loadLevel = l; return document.getElementById("video").currentTime; }, level);
      await viewer.page.waitForFunction((h) => document.getElementById("video").videoHeight === h, heights[level], { timeout: 20000 });
      await viewer.page.waitForFunction((t) => document.getElementById("video").currentTime > t + 1, before, { timeout: 20000 });
    }
    assert.equal(await viewer.page.evaluate(() => window.stalls), 0, `no stall while switching: ${await viewer.page.evaluate(() => JSON.stringify({ log: window.stallLog, waitedMs: window.waited }))}`);
    await viewer.page.screenshot({ path: join(ARTIFACTS, "ladder-360p.png") });

    // A 1.5 Mb/s link (the DevTools protocol's throttling): automatic ABR leaves the 3 Mb/s
    // source for a rung it can hold, and stays there.
    const cdp = await viewer.context.newCDPSession(viewer.page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", {
      offline: false, latency: 20, downloadThroughput: 1_500_000 / 8, uploadThroughput: 1_500_000 / 8,
    });
    await viewer.page.evaluate(() => { window.commeowPlayer.loadLevel = 2; });
    await viewer.page.waitForFunction(() => document.getElementById("video").videoHeight === 480, null, { timeout: 20000 });
    await viewer.page.evaluate(() => { window.commeowPlayer.loadLevel = -1; });
    await viewer.page.waitForFunction(() => {
      const p = window.commeowPlayer;
      return p.autoLevelEnabled && p.currentLevel >= 0 && p.currentLevel < 2 && document.getElementById("video").videoHeight < 480;
    }, null, { timeout: 45000 });
    const settled = await viewer.page.evaluate(() => window.commeowPlayer.currentLevel);
    const at = await viewer.page.evaluate(() => document.getElementById("video").currentTime);
    await viewer.page.waitForFunction((t) => document.getElementById("video").currentTime > t + 4, at, { timeout: 20000 });
    const after = await viewer.page.evaluate(() => window.commeowPlayer.currentLevel);
    assert.ok(after < 2, `ABR went back to the source on a 1.5 Mb/s link (settled ${settled}, then ${after})`);
  } finally {
    await pusher.stop();
    await viewer.context.close();
    await daemon.close();
  }
});

test("the admin's dashboard shows the encoder probe's choice, each rejection, and the live rungs", async () => {
  const { daemon, channel } = await venue(LADDER);
  const boss = await daemon.user("boss", "admin");
  const admin = await phone(chromium, daemon, boss);
  const pusher = push(`${daemon.rtmp}/${channel.stream_key}`, 120, 60, LADDER_PUSH);
  try {
    await admin.page.goto(`${daemon.base}/dashboard`);
    await admin.page.locator("#transcode [data-rung='360p'] .encoder").waitFor({ timeout: 20000 });
    assert.equal(await admin.page.locator("#transcode [data-rung='360p'] .encoder").innerText(), "libx264");
    assert.match(await admin.page.locator("#ladder-state").innerText(), /^켜짐/);
    // The rejections fold away on a phone; each names libav's reason.
    assert.match(await admin.page.locator("#transcode [data-rung='240p'] summary").innerText(), /^5 /);
    assert.match(await admin.page.locator("#transcode [data-rung='240p'] details").textContent(), /h264_nvenc: .*libcuda/);
    await admin.page.locator("#live-rungs [data-live='stage/240p']").waitFor({ timeout: 30000 });
    await admin.page.waitForFunction(() => /running/.test(document.querySelector("#live-rungs [data-live='stage/360p']")?.textContent ?? ""), null, { timeout: 30000 });
    await admin.page.screenshot({ path: join(ARTIFACTS, "dashboard-ladder.png"), fullPage: true });
    // A streamer does not see the box's encoders.
    const djay = await daemon.api("POST", "/api/auth/login", { username: "djay", password: PASSWORD });
    await assert.rejects(daemon.api("GET", "/api/system/transcode", null, djay.access_token), /403/);
  } finally {
    await pusher.stop();
    await admin.context.close();
    await daemon.close();
  }
});
