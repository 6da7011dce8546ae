// Opens one headless Chromium tab per player URL, all at once, lets them play for the
// given seconds, and prints each tab's glass-to-glass figures as JSON.
// Usage: node run.mjs PAGE_BASE SECONDS NAME=URL [NAME=URL ...]
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
for (const target of targets) {
  const [name, url] = target.split(/=(.*)/s);
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error(`[${name}] ${m.text()}`));
  await page.goto(`${base}/www/index.html?src=${encodeURIComponent(url)}`);
  pages.push({ name, page });
}
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
const out = {};
for (const { name, page } of pages) {
  out[name] = await page.evaluate(() => window.results);
  await page.screenshot({ path: `${process.env.OUT ?? "."}/latency-${name}.png` });
}
await browser.close();
console.log(JSON.stringify(out));
