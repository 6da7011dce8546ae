// The venue operator's console end to end in headless Chromium: a fresh box onboarded in
// the page, a signed-up viewer made a streamer while their dashboard is open, a channel
// and a live push, Kakao Pay switched on against the fake and a viewer's top-up, a grant
// and the CSV export against the ledger, the box's health and the audit log, with no CLI
// call and no file written by the test (the setup code is the card's, the key file the
// fake's own). Phone-sized screenshots of each console page go to target/web-artifacts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { ARTIFACTS, Daemon, FakeKakaoPay, PASSWORD, browser, phone, push } from "./harness.mjs";

let chromium;
before(async () => { chromium = await browser(); });
after(async () => { await chromium?.close(); });

const KAKAO_SECRET = "DEV-WEB-TEST-SECRET";

/// Signs up through the page and lands where `next` says. Accounts made from one address
/// are spaced out (the box says how long to wait): like a person, it presses again.
async function signUp(page, base, name, next = "/") {
  await page.goto(`${base}/signup?next=${encodeURIComponent(next)}`);
  await page.fill("#username", name);
  await page.fill("#password", PASSWORD);
  await page.fill("#nickname", name);
  for (let attempt = 0; !page.url().endsWith(next); attempt++) {
    assert.ok(attempt < 60, `sign-up never went through: ${await page.locator("#form-error").innerText()}`);
    await page.click("#submit");
    await page.waitForURL(`${base}${next}`, { timeout: 1000 }).catch(() => {});
  }
}

/// Clicks `selector` and waits for the answer beside it to say something other than "…".
async function press(page, selector) {
  await page.click(selector);
  const said = page.locator(`${selector} + .said`);
  await page.waitForFunction((el) => el && (el.classList.contains("ok") || el.classList.contains("error")), await said.elementHandle());
  return { text: await said.innerText(), ok: await said.evaluate((el) => el.classList.contains("ok")) };
}

test("an operator runs the box from a phone: people, channels, Kakao Pay, grants, export, health and the audit log", async () => {
  const kakao = await FakeKakaoPay.start();
  const card = mkdtempSync(join(tmpdir(), "commeow-card-"));
  // What the card image writes at first boot: the one-time setup code.
  writeFileSync(join(card, "setup-code"), "KX7QP-M4RZ9\n");
  const daemon = await Daemon.start(`[onboarding]\nsetup_code_file = "${join(card, "setup-code")}"\n`);
  const admin = await phone(chromium, daemon);
  const streamer = await phone(chromium, daemon);
  const fan = await phone(chromium, daemon);
  let pusher;
  try {
    // 1. A fresh box is onboarded.
    await admin.page.goto(`${daemon.base}/`);
    await admin.page.fill("#setup-code", "kx7qp m4rz9");
    await admin.page.fill("#venue-name", "고양이 라운지");
    await admin.page.fill("#username", "boss");
    await admin.page.fill("#password", PASSWORD);
    await admin.page.click("#submit");
    await admin.page.waitForURL(`${daemon.base}/dashboard`);
    await admin.page.locator("#console-link").waitFor();

    // 2. A signed-up viewer's open dashboard gains the streamer view when the admin
    // makes them a streamer, without logging in again.
    await signUp(streamer.page, daemon.base, "djay", "/dashboard");
    await streamer.page.locator("#streamers-only").waitFor();
    await admin.page.click("#console-link");
    await admin.page.waitForURL(`${daemon.base}/admin`);
    await admin.page.fill("#people-search", "djay");
    await admin.page.locator('[data-user="djay"]').waitFor();
    await admin.page.locator('[data-user="boss"]').waitFor({ state: "detached" });
    await admin.page.selectOption('select[data-role="djay"]', "streamer");
    assert.equal((await press(admin.page, '[data-save-role="djay"]')).ok, true);
    await streamer.page.locator("#new-channel").waitFor({ timeout: 10000 });

    // 3. The streamer creates a channel and goes live with ffmpeg.
    await streamer.page.fill("#new-slug", "stage");
    await streamer.page.fill("#new-title", "금요일 밤");
    await streamer.page.click("#new-channel button");
    const key = await streamer.page.locator("#key").innerText();
    const server = await streamer.page.locator("#obs-server").innerText();
    pusher = push(`${server}/${key}`);
    await streamer.page.locator("#my-channels .badge.live").waitFor({ timeout: 30000 });
    await admin.page.click('[data-tab="channels"]');
    await admin.page.locator('[data-channel="stage"] .badge.live').waitFor({ timeout: 15000 });
    assert.match(await admin.page.locator('[data-channel="stage"]').innerText(), /djay/);
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-channels.png"), fullPage: true });

    // 4. The admin sets up Kakao Pay against the fake, and a viewer tops up.
    await signUp(fan.page, daemon.base, "minji", "/topup");
    await fan.page.locator("main", { hasText: "충전을 할 수 없어요" }).waitFor();
    await admin.page.click('[data-tab="money"]');
    await admin.page.fill("#kakao-base-url", kakao.base);
    await admin.page.fill("#kakao-cid", "TC0ONETIME");
    await admin.page.fill("#kakao-secret", KAKAO_SECRET);
    assert.equal((await press(admin.page, "#kakao-save")).ok, true);
    await admin.page.locator("#kakao-state.live").waitFor();
    assert.equal(await admin.page.inputValue("#kakao-secret"), "", "the key is not kept in the page");
    const check = await press(admin.page, "#kakao-check");
    assert.equal(check.ok, true, check.text);
    assert.match(check.text, /tid/);
    assert.ok(!(await admin.page.content()).includes(KAKAO_SECRET), "the page never shows the key");
    await fan.page.goto(`${daemon.base}/topup`);
    await fan.page.click('button[data-product="points-5000"]');
    const href = await fan.page.locator("#pay-pc").getAttribute("href");
    const payer = await fan.context.newPage();
    await payer.goto(href);
    await payer.click("#pay");
    await fan.page.locator("#new-balance", { hasText: "5,000" }).waitFor({ timeout: 15000 });
    await admin.page.reload();
    await admin.page.locator("#orders td.ok", { hasText: "approved" }).waitFor();
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-money.png"), fullPage: true });

    // 5. The admin grants points, and the CSV export's totals equal the ledger's.
    await admin.page.click('[data-tab="people"]');
    await admin.page.fill('[data-grant-points="minji"]', "700");
    await admin.page.fill('[data-grant-reason="minji"]', "단골 손님");
    assert.match((await press(admin.page, '[data-grant="minji"]')).text, /5,700/);
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-people.png"), fullPage: true });
    await admin.page.click('[data-tab="money"]');
    assert.equal((await press(admin.page, "#ledger-check")).ok, true);
    const [download] = await Promise.all([admin.page.waitForEvent("download"), admin.page.click("#export-download")]);
    const csv = readFileSync(await download.path(), "utf8");
    const total = (kind) => Number(csv.split("\n").find((l) => l.startsWith(`total,${kind},`))?.split(",")[5] ?? 0);
    const token = await admin.page.evaluate(() => localStorage.getItem("access_token"));
    const ledger = await daemon.api("POST", "/api/admin/ledger/check", {}, token);
    const balance = (account) => ledger.totals.find((t) => t.account === account)?.balance ?? 0;
    assert.equal(total("topup"), -balance("kakao_pay"), csv);
    assert.equal(total("grant"), -balance("promotions"), csv);
    assert.equal(total("topup") + total("grant"), balance("wallet") + balance("earnings"), csv);
    assert.equal(total("topup"), 5000);

    // Settings: a bad value says what check-config would, and nothing changes.
    await admin.page.click('[data-tab="settings"]');
    await admin.page.fill('[data-key="points.donation_min"]', "9000000");
    const refused = await press(admin.page, "#settings-save");
    assert.equal(refused.ok, false);
    assert.match(refused.text, /points\.donation_max/);
    // Drawn again from the box: the refused value is gone.
    await admin.page.click('[data-tab="settings"]');
    assert.notEqual(await admin.page.inputValue('[data-key="points.donation_min"]'), "9000000");
    await admin.page.fill("#venue-name", "고양이 라운지 2호점");
    assert.equal((await press(admin.page, "#settings-save")).ok, true);
    assert.equal(await admin.page.locator(".brand").innerText(), "고양이 라운지 2호점");
    await admin.page.locator("#restart-note").waitFor();
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-settings.png"), fullPage: true });

    // 6. The box's health, and the audit log lists each step.
    await admin.page.click('[data-tab="box"]');
    const health = await admin.page.locator("#health").innerText();
    assert.match(health, /0\.1\.0/);
    assert.ok(health.includes(server), `the OBS URL is shown: ${health}`);
    assert.match(health, /stage/);
    // Joining the fleet starts here: the box makes its key and a request to download.
    await admin.page.fill("#fleet-box-id", "hall-1");
    await press(admin.page, "#fleet-make-csr");
    assert.match(await admin.page.locator("#fleet-csr").innerText(), /fleet-certs DIR sign hall-1 hall-1\.csr/);
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-box.png"), fullPage: true });
    await admin.page.click('[data-tab="audit"]');
    // The log arrives in one answer after the tab opens: wait for its newest row (the CSR
    // just made), then read them all.
    await admin.page.waitForSelector('#audit [data-action="fleet_csr"]');
    const actions = await admin.page.locator("#audit [data-action]").evaluateAll((rows) => rows.map((r) => r.dataset.action).reverse());
    assert.deepEqual(actions, ["onboard", "set_role", "kakao_pay", "grant", "ledger_check", "export", "ledger_check", "rename_venue", "fleet_csr"]);
    assert.match(await admin.page.locator("#audit").innerText(), /boss · 127\.0\.0\.1/);
    await admin.page.screenshot({ path: join(ARTIFACTS, "console-audit.png"), fullPage: true });
    assert.ok(!(await admin.page.content()).includes(KAKAO_SECRET));
    assert.ok(!daemon.log.join("").includes(KAKAO_SECRET), "no log line holds the key");
    for (const p of [admin.page, streamer.page, fan.page]) {
      assert.deepEqual(p.errors.filter((e) => !e.includes("status of 4")), [], "no script errors");
    }
  } finally {
    await pusher?.stop();
    await admin.context.close();
    await streamer.context.close();
    await fan.context.close();
    await daemon.close();
    await kakao.close();
    rmSync(card, { recursive: true, force: true });
  }
});
