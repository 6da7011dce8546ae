// See web.sh. Each load is a fresh browser context (an empty cache, as a phone that has
// never been here), phone-sized.
import { writeFileSync } from "node:fs";
import { Daemon, browser, push } from "../daemon/web/tests/harness.mjs";

const loads = Number(process.argv[2] ?? 20);
const BUDGET_BYTES = 300 * 1024;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.95) - 1)];

const daemon = await Daemon.start();
const djay = await daemon.user("djay", "streamer");
const channel = await daemon.api("POST", "/api/channels", { slug: "stage", title: "Bench" }, djay.access_token);
const pusher = push(`${daemon.rtmp}/${channel.stream_key}`, 600);
const chromium = await browser();

/// Bytes on the wire for everything but media (HTML, CSS, JS, API answers).
async function weigh(page) {
  return page.evaluate(() => {
    const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
    const pageBytes = entries.filter((e) => !e.name.includes("/hls/")).reduce((n, e) => n + e.transferSize, 0);
    return { pageBytes, files: entries.filter((e) => !e.name.includes("/hls/")).map((e) => [new URL(e.name).pathname, e.transferSize]) };
  });
}

const results = { list: [], watch: [] };
try {
  // Wait for the stream to be live, so the list shows it and the watch page plays.
  for (let i = 0; i < 100; i++) {
    const list = await daemon.api("GET", "/api/channels");
    if (list[0]?.live) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  for (let i = 0; i < loads; i++) {
    const context = await chromium.newContext({ viewport: { width: 390, height: 844 }, locale: "ko-KR" });
    const page = await context.newPage();
    await page.goto(`${daemon.base}/`);
    await page.locator('a[data-slug="stage"]').waitFor();
    const listed = await page.evaluate(() => performance.now());
    const fcp = await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? NaN);
    results.list.push({ fcp, listed, ...(await weigh(page)) });
    await context.close();

    const watchContext = await chromium.newContext({ viewport: { width: 390, height: 844 }, locale: "ko-KR" });
    const watch = await watchContext.newPage();
    await watch.goto(`${daemon.base}/c/stage`);
    await watch.waitForFunction(() => {
      const v = document.getElementById("video");
      return v && v.getVideoPlaybackQuality().totalVideoFrames > 0 && v.currentTime > 0;
    }, null, { timeout: 30000 });
    const firstFrame = await watch.evaluate(() => performance.now());
    const watchFcp = await watch.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? NaN);
    results.watch.push({ fcp: watchFcp, firstFrame, ...(await weigh(watch)) });
    await watchContext.close();
  }
} finally {
  await chromium.close();
  await pusher.stop();
  await daemon.close();
}

const kb = (n) => (n / 1024).toFixed(1);
const ms = (n) => n.toFixed(0);
const col = (rows, key) => rows.map((r) => r[key]);
const listBytes = median(col(results.list, "pageBytes"));
const watchBytes = median(col(results.watch, "pageBytes"));
const files = results.watch[0].files.map(([path, bytes]) => `| ${path} | ${kb(bytes)} |`).join("\n");
const markdown = `# Web app: weight and first paint (${loads} cold loads each, phone-sized headless Chromium, loopback)

| page | transferred KB (median) | budget | first contentful paint ms (median / p95) | content ms (median / p95) |
|---|---|---|---|---|
| channel list \`/\` | ${kb(listBytes)} | ${kb(BUDGET_BYTES)} | ${ms(median(col(results.list, "fcp")))} / ${ms(p95(col(results.list, "fcp")))} | list shown ${ms(median(col(results.list, "listed")))} / ${ms(p95(col(results.list, "listed")))} |
| watch \`/c/stage\` | ${kb(watchBytes)} | ${kb(BUDGET_BYTES)} | ${ms(median(col(results.watch, "fcp")))} / ${ms(p95(col(results.watch, "fcp")))} | first video frame ${ms(median(col(results.watch, "firstFrame")))} / ${ms(p95(col(results.watch, "firstFrame")))} |

Transferred = compressed bytes on the wire for the page's HTML, CSS, scripts and API answers
(media segments excluded). Watch page files on its first load:

| file | KB |
|---|---|
${files}

Rerun: \`bench/web.sh [loads]\`.
`;
writeFileSync("bench/out/web.md", markdown);
writeFileSync("bench/out/web.json", JSON.stringify(results, null, 2));
console.log(markdown);
