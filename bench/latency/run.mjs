// Opens one headless Chromium tab per player URL and prints each tab's glass-to-glass
// figures as JSON. Tabs without a delay are viewers waiting on the page before the stream
// starts (the probe polls until it is up, then plays): they are opened first, then this
// prints "ready" and reads, from stdin, the Unix ms at which the push started. A
// NAME@DELAY=URL tab opens DELAY seconds after the push started: a viewer joining late,
// mid-keyframe-interval. URL may start with the probe page's player (`stock:`, `tuned:`,
// `whep:`); tuned hls.js otherwise. Tabs play until SECONDS after the push started.
// Usage: node run.mjs PAGE_BASE SECONDS NAME[@DELAY]=[PLAYER:]URL [...]
import { createInterface } from "node:readline";
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
const tabs = targets.map((target) => {
  const [label, url] = target.split(/=(.*)/s);
  const [name, delay] = label.split("@");
  const [, player, src] = url.match(/^(?:(stock|tuned|whep):)?(.*)$/s);
  return { name, delay: delay === undefined ? null : Number(delay), player: player ?? "tuned", src };
});

const pages = [];
async function open({ name, player, src }, wait) {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error(`[${name}] ${m.text()}`));
  const openedAt = Date.now();
  await page.goto(`${base}/www/index.html?player=${player}&src=${encodeURIComponent(src)}${wait ? "&wait=1" : ""}`);
  pages.push({ name, page, openedAt });
}

await Promise.all(tabs.filter((t) => t.delay === null).map((t) => open(t, true)));
console.log("ready");
const lines = createInterface({ input: process.stdin });
const pushedAt = Number((await lines[Symbol.asyncIterator]().next()).value);
lines.close();

await Promise.all(tabs.filter((t) => t.delay !== null).map(async (t) => {
  await new Promise((r) => setTimeout(r, Math.max(0, pushedAt + t.delay * 1000 - Date.now())));
  await open(t, false);
}));
await new Promise((r) => setTimeout(r, Math.max(0, pushedAt + Number(seconds) * 1000 - Date.now())));
const out = {};
for (const { name, page, openedAt } of pages) {
  out[name] = { ...(await page.evaluate(() => window.results)), openedAt };
  await page.screenshot({ path: `${process.env.OUT ?? "."}/latency-${name}.png` });
}
await browser.close();
console.log(JSON.stringify(out));
