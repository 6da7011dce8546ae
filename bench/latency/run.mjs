// Opens one headless Chromium tab per player URL, lets them play for the given seconds,
// and prints each tab's glass-to-glass figures as JSON. A NAME@DELAY=URL tab opens DELAY
// seconds after the others: a viewer joining late, mid-keyframe-interval. URL may start with
// the probe page's player (`stock:`, `tuned:`, `whep:`); tuned hls.js otherwise. A tab
// without DELAY opens as soon as its stream is up (PUSHED_AT_MS: when the push started).
// Usage: node run.mjs PAGE_BASE SECONDS NAME[@DELAY]=[PLAYER:]URL [...]
import { chromium } from "playwright-core";

const [base, seconds, ...targets] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    // Tabs in the background must not be throttled: each is a viewer.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
  ],
});
const pages = [];
const opened = [];
const started = Date.now();
for (const target of targets) {
  const [label, url] = target.split(/=(.*)/s);
  const [name, delay] = label.split("@");
  opened.push((async () => {
    const [, player, src] = url.match(/^(?:(stock|tuned|whep):)?(.*)$/s);
    if (delay) {
      await new Promise((r) => setTimeout(r, Number(delay) * 1000));
    } else {
      // Open the moment the stream is up on this server, as a viewer waiting for it would:
      // its playlist answers 200 (for WHEP, the same box's LL-HLS master).
      const ready = player === "whep" ? src.replace(/\/whep\/([^/]+)$/, "/hls/$1/master.m3u8") : src;
      while (!(await fetch(ready).then((r) => r.ok).catch(() => false))) await new Promise((r) => setTimeout(r, 50));
    }
    const openedAfterPushMs = Date.now() - Number(process.env.PUSHED_AT_MS ?? started);
    const page = await browser.newPage();
    page.on("console", (m) => m.type() === "error" && console.error(`[${name}] ${m.text()}`));
    await page.goto(`${base}/www/index.html?player=${player ?? "tuned"}&src=${encodeURIComponent(src)}`);
    pages.push({ name, page, openedAfterPushMs });
  })());
}
await Promise.all(opened);
await new Promise((r) => setTimeout(r, Math.max(0, Number(seconds) * 1000 - (Date.now() - started))));
const out = {};
for (const { name, page, openedAfterPushMs } of pages) {
  out[name] = { ...(await page.evaluate(() => window.results)), openedAfterPushMs };
  await page.screenshot({ path: `${process.env.OUT ?? "."}/latency-${name}.png` });
}
await browser.close();
console.log(JSON.stringify(out));
