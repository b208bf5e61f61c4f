/**
 * The demo page at `/` in a real browser: Debian's chromium driven by playwright-core (no browser
 * download), against the real service (`wrangler dev`, tiny synthetic model). Keyboard only
 * (Tab to the button, Enter and Space open the chooser), results in a live region with timing and
 * model identity, the same file twice, a file that is not an image, an unreachable server, and no
 * failed request (favicon included) or page error throughout.
 *
 * Chromium comes from `apt-get install chromium` (.ci/run does it). Without it the tests are
 * skipped with a notice, except under CI=true, where a missing browser fails the run.
 */
import { existsSync } from "node:fs";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testPng } from "./helpers/png.ts";
import { startTinyService, type TinyService } from "./helpers/tiny-service.ts";

const candidates = [process.env.CHROMIUM_PATH, "/usr/lib/chromium/chromium", "/usr/bin/chromium"];
const executablePath = candidates.find((p): p is string => !!p && existsSync(p));
if (!executablePath) {
  if (process.env.CI) throw new Error("chromium is not installed: apt-get install -y chromium");
  console.warn("demo page tests SKIPPED: no chromium (apt-get install -y chromium, or set CHROMIUM_PATH)");
}

let svc: TinyService | null = null;
let browser: Browser | null = null;
const png = { name: "gradient.png", mimeType: "image/png", buffer: Buffer.from(testPng(64, 48, 5)) };

/** A fresh page that records page errors, console errors and failed responses. */
async function openPage(): Promise<{ page: Page; problems: string[] }> {
  const page = await browser!.newPage({ viewport: { width: 390, height: 844 } });
  const problems: string[] = [];
  // playwright turns on file-chooser interception when the first "filechooser" listener is added,
  // without waiting for the browser to confirm it; a key press sent right after waitForEvent could
  // reach chromium first, and the chooser then opened unintercepted (no event: a CI flake). A
  // listener from the start has it on long before any key press.
  page.on("filechooser", () => undefined);
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text()))
      problems.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => {
    // The page's own error cases (415 for a text file) are expected answers, not broken loads.
    if (r.status() >= 400 && !r.url().includes("/v1/classify")) problems.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(`${svc!.url}/`);
  await expect.poll(() => page.textContent("#model")).toContain(svc!.manifest.model.id);
  return { page, problems };
}

/** Presses `key` on the focused button and feeds the file chooser it opens. */
async function chooseWithKey(page: Page, key: "Enter" | " ", file: typeof png): Promise<void> {
  const chooser = page.waitForEvent("filechooser", { timeout: 10_000 });
  await page.keyboard.press(key);
  await (await chooser).setFiles(file);
}

describe.skipIf(!executablePath)("demo page in chromium", () => {
  beforeAll(async () => {
    [svc, browser] = await Promise.all([
      startTinyService({ seed: 13 }),
      chromium.launch({
        executablePath,
        headless: true,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      }),
    ]);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await svc?.stop();
  }, 30_000);

  it("works from the keyboard: Tab, Enter; labels in a live region with timing and model; same file again with Space", async () => {
    const { page, problems } = await openPage();
    await page.keyboard.press("Tab");
    expect(await page.evaluate("document.activeElement && document.activeElement.id")).toBe("choose");
    expect(await page.getAttribute("#out", "aria-live")).toBe("polite");
    await chooseWithKey(page, "Enter", png);
    await page.waitForSelector("#out table tr", { timeout: 60_000 });
    expect(await page.locator("#out table tr").count()).toBe(5);
    const timing = (await page.textContent("#timing")) ?? "";
    for (const part of [
      "decode",
      "model",
      "total",
      svc!.manifest.model.id,
      svc!.manifest.version.slice(0, 12),
    ])
      expect(timing).toContain(part);
    const first = await page.textContent("#out");
    // The same file again (focus is back on the button after the chooser): a second request.
    const again = page.waitForRequest((r) => r.url().includes("/v1/classify"), { timeout: 10_000 });
    await chooseWithKey(page, " ", png);
    await again;
    await page.waitForSelector("#out table tr", { timeout: 60_000 });
    expect(await page.textContent("#out")).toBe(first);
    // The favicon is served (no 404 on any load).
    expect((await page.request.get(`${svc!.url}/favicon.ico`)).headers()["content-type"]).toBe(
      "image/svg+xml",
    );
    expect(problems).toEqual([]);
  });

  it("says a text file is not a supported image", async () => {
    const { page, problems } = await openPage();
    await page.setInputFiles("#file", {
      name: "notes.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("hello"),
    });
    await expect
      .poll(() => page.textContent("#out"), { timeout: 30_000 })
      .toContain("notes.txt is not a supported image");
    expect(problems).toEqual([]);
  });

  it("shows a clear error, not an endless spinner, when the server cannot be reached", async () => {
    const { page, problems } = await openPage();
    await page.route("**/v1/classify**", (route) => route.abort("connectionrefused"));
    await page.setInputFiles("#file", png);
    await expect.poll(() => page.textContent("#out"), { timeout: 30_000 }).toContain("could not be reached");
    expect(await page.getAttribute("#out", "aria-busy")).toBeNull();
    expect(problems).toEqual([]);
  });
});
