// "In the room" in headless Chromium: the watch page plays WebRTC (WHEP) from a live ffmpeg
// push on loopback host candidates, says so, and chat works as with LL-HLS; it falls back
// to LL-HLS when no UDP path opens or the box has no WebRTC place left, and says that too.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { ARTIFACTS, Daemon, assertPlays, browser, phone, push } from "./harness.mjs";

let chromium;
before(async () => { chromium = await browser(); });
after(async () => { await chromium?.close(); });

async function venue(config = "") {
  const daemon = await Daemon.start(config);
  const djay = await daemon.user("djay", "streamer");
  const channel = await daemon.api("POST", "/api/channels", { slug: "stage", title: "현장" }, djay.access_token);
  const pusher = push(`${daemon.rtmp}/${channel.stream_key}`);
  return { daemon, pusher };
}

async function modeOf(page) {
  const mode = page.locator("#play-mode");
  await mode.waitFor({ state: "visible", timeout: 30000 });
  return { mode: await mode.getAttribute("data-mode"), why: await mode.getAttribute("title"), text: await mode.innerText() };
}

test("a phone in the room plays WebRTC, says so, and chats as on LL-HLS", async () => {
  const { daemon, pusher } = await venue();
  const tokens = await daemon.user("minji");
  const viewer = await phone(chromium, daemon, tokens);
  try {
    await viewer.page.goto(`${daemon.base}/c/stage`);
    const { mode, text } = await modeOf(viewer.page);
    assert.equal(mode, "webrtc");
    assert.match(text, /WebRTC/);
    await assertPlays(viewer.page, 2);
    assert.equal(await viewer.page.evaluate(() => document.getElementById("video").srcObject instanceof MediaStream), true);
    // Both tracks arrive.
    const kinds = await viewer.page.evaluate(() => document.getElementById("video").srcObject.getTracks().map((t) => t.kind).sort());
    assert.deepEqual(kinds, ["audio", "video"]);
    await viewer.page.fill("#chat-input", "현장에서 보고 있어요");
    await viewer.page.click("#chat-send");
    await viewer.page.locator("#chat-lines li", { hasText: "현장에서 보고 있어요" }).waitFor();
    await viewer.page.screenshot({ path: join(ARTIFACTS, "watch-webrtc.png") });
    // Leaving the page ends the session on the box (its DELETE).
    await viewer.page.goto(`${daemon.base}/`);
    for (let tries = 0; !daemon.log.join("").includes("WebRTC viewer left"); tries++) {
      assert.ok(tries < 100, "the session did not end when the page left");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(viewer.page.errors, []);
  } finally {
    await pusher.stop();
    await viewer.context.close();
    await daemon.close();
  }
});

test("with no UDP path to the box the page falls back to LL-HLS and says so", async () => {
  // The box offers only an address nothing answers on (TEST-NET-1), as a guest network
  // that isolates clients or a firewall dropping UDP would leave it.
  const { daemon, pusher } = await venue('[webrtc]\nport = 0\naddresses = ["192.0.2.1"]\n');
  const viewer = await phone(chromium, daemon);
  try {
    await viewer.page.goto(`${daemon.base}/c/stage`);
    const { mode, why } = await modeOf(viewer.page);
    assert.equal(mode, "hls");
    assert.match(why, /UDP|WebRTC/);
    await assertPlays(viewer.page);
  } finally {
    await pusher.stop();
    await viewer.context.close();
    await daemon.close();
  }
});

test("past the channel's WebRTC viewers a new phone plays LL-HLS", async () => {
  const { daemon, pusher } = await venue("[webrtc]\nport = 0\nmax_viewers_per_channel = 1\n");
  const first = await phone(chromium, daemon);
  const second = await phone(chromium, daemon);
  try {
    await first.page.goto(`${daemon.base}/c/stage`);
    assert.equal((await modeOf(first.page)).mode, "webrtc");
    await second.page.goto(`${daemon.base}/c/stage`);
    const { mode, why } = await modeOf(second.page);
    assert.equal(mode, "hls");
    assert.match(why, /WebRTC viewers/);
    await assertPlays(first.page);
    await assertPlays(second.page);
  } finally {
    await pusher.stop();
    await first.context.close();
    await second.context.close();
    await daemon.close();
  }
});
