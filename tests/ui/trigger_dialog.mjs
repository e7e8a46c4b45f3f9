// Drives the Airflow UI's Trigger dialog as a user does, in Debian's chromium (headless), and prints
// the API answer the dialog received as one JSON line, for tests/test_ui_and_rest_triggers.py to follow up.
//
//   node trigger_dialog.mjs single   BASE_URL DAG_ID SCREENSHOT
//   node trigger_dialog.mjs backfill BASE_URL DAG_ID SCREENSHOT FROM_YYYY/MM/DD TO_YYYY/MM/DD
import { chromium } from 'playwright-core';

const [mode, base, dagId, screenshot, from, to] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The machine's network is closed: no background connections, no sandbox (root in CI).
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  await page.goto(`${base}/dags/${dagId}`);
  await page.getByRole('button', { name: /^Trigger/ }).first().click();
  const dialog = page.getByRole('dialog').first();
  await dialog.getByText('Run Parameters').waitFor();

  async function pickDate(index, date) {
    await dialog.getByTestId('datetime-input').nth(index).click();
    // Depending on render timing the inputs of both ends (From, To) can be in the page at once: take this
    // end's, in document order.
    const mine = async (locator) => ((await locator.count()) > 1 ? locator.nth(index) : locator);
    await (await mine(page.getByPlaceholder('YYYY/MM/DD'))).fill(date);
    await (await mine(page.getByPlaceholder('HH:mm'))).fill('00:00');
    await dialog.getByText('Date Range').click(); // closes the picker, keeps the dialog
  }

  let submit, answer;
  if (mode === 'single') {
    // Nothing typed: the defaults as the dialog opens must be enough.
    submit = dialog.getByRole('button', { name: 'Trigger', exact: true });
    answer = (r) => r.request().method() === 'POST' && r.url().includes(`/api/v2/dags/${dagId}/dagRuns`);
  } else {
    await dialog.getByText('Backfill', { exact: true }).click();
    await pickDate(0, from);
    await pickDate(1, to);
    submit = dialog.getByRole('button', { name: 'Run Backfill' });
    answer = (r) => r.request().method() === 'POST' && /\/api\/v2\/backfills$/.test(new URL(r.url()).pathname);
  }
  if (!(await submit.isEnabled())) {
    await page.screenshot({ path: screenshot });
    throw new Error(`the ${mode} submit button is disabled as the dialog stands (see ${screenshot})`);
  }
  const [response] = await Promise.all([page.waitForResponse(answer, { timeout: 60000 }), submit.click()]);
  await page.waitForTimeout(500);
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ status: response.status(), request: response.request().postDataJSON(),
                               body: await response.json() }));
} finally {
  await browser.close();
}
