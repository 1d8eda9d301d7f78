// The console in a real browser: playwright-core driving Debian's chromium against a running
// iotpipe (started by tests/console_browser.rs), with real devices (mosquitto_pub, mosquitto_sub)
// and a real AMQP consumer (rhea).
// Env: BASE TOKEN PK DEVICE_NAME EVIL_NAME EVIL_CLIENT_ID_SHOWN MQTT_HOST MQTT_PORT AMQP_PORT ACCESS_KEY_ID ACCESS_KEY_SECRET SHOTS
//      DEVICE_CLIENT_ID DEVICE_USERNAME DEVICE_PASSWORD (a device that publishes)
//      EVIL_CLIENT_ID EVIL_USERNAME EVIL_PASSWORD (a device whose client id holds a <script>)
// Exits 0 when every step passed; prints the failing step otherwise.
'use strict';
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const crypto = require('crypto');
const path = require('path');
const rhea = require('rhea');

const env = process.env;
const BASE = env.BASE;
const TIMEOUT = 20000;
const problems = [];
let step = 'start';

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

/** Publishes `n` QoS 1 messages as the device, with mosquitto_pub. */
async function publish(n, temperature) {
  for (let i = 0; i < n; i++) {
    await run('mosquitto_pub', ['-h', env.MQTT_HOST, '-p', env.MQTT_PORT, '-V', 'mqttv311', '-q', '1',
      '-i', env.DEVICE_CLIENT_ID, '-u', env.DEVICE_USERNAME, '-P', env.DEVICE_PASSWORD,
      '-t', `/${env.PK}/${env.DEVICE_NAME}/user/update`, '-m', JSON.stringify({ temperature, n: i })]);
  }
}

/** An AMQP consumer of `group` whose client id is hostile markup; accepts what it gets. */
function consumer(group, clientId) {
  const timestamp = Date.now();
  const username = `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=${timestamp},authId=${env.ACCESS_KEY_ID},iotInstanceId=,consumerGroupId=${group}|`;
  const password = crypto.createHmac('sha1', env.ACCESS_KEY_SECRET)
    .update(`authId=${env.ACCESS_KEY_ID}&timestamp=${timestamp}`).digest('base64');
  const c = rhea.create_container();
  const state = { got: 0 };
  c.on('message', (ctx) => { ctx.delivery.accept(); state.got += 1; });
  c.on('error', (e) => problems.push(`consumer error: ${e}`));
  state.connection = c.connect({ host: env.MQTT_HOST, port: Number(env.AMQP_PORT), reconnect: false, username, password, idle_time_out: 60000 });
  state.connection.open_receiver({ autoaccept: false });
  return state;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(env.SHOTS, `${name}.png`), fullPage: true });
}

async function main() {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('request', (r) => { if (!r.url().startsWith(BASE) && !r.url().startsWith('data:')) problems.push(`request outside the server: ${r.url()}`); });
  page.on('dialog', (d) => { problems.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // Refusals the steps provoke (401 on a wrong token, 400 on a bad name) are logged by the
  // browser as failed loads; any other console error fails the test.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console error: ${m.text()}`);
  });
  const evil = spawn('mosquitto_sub', ['-h', env.MQTT_HOST, '-p', env.MQTT_PORT, '-V', 'mqttv311', '-q', '1',
    '-i', env.EVIL_CLIENT_ID, '-u', env.EVIL_USERNAME, '-P', env.EVIL_PASSWORD, '-t', `/${env.PK}/${env.EVIL_NAME}/user/get`], { stdio: 'ignore' });
  let reader = null;
  let gid = null;
  try {
    step = 'sign in';
    await page.goto(BASE + '/');
    await page.waitForURL(/\/console\/login$/);
    await shot(page, '01-sign-in');
    await page.getByLabel('Admin token').fill('wrong-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That is not the admin token').waitFor();
    await page.getByLabel('Admin token').fill(env.TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByText('Messages in per second').waitFor();
    await shot(page, '02-overview');

    step = 'create a group: an invalid name, then a valid one';
    await page.getByRole('link', { name: 'Consumer Groups' }).click();
    await page.getByRole('heading', { name: 'Consumer Groups' }).waitFor();
    await page.getByRole('button', { name: 'Create Consumer Group' }).click();
    const name = page.getByLabel('Consumer group name', { exact: true });
    await name.fill('ab');
    await page.getByText('4 to 30 characters').waitFor();
    await name.fill('bad-name');
    await page.getByText('"-" is not allowed').waitFor();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('dialog').getByRole('alert').filter({ hasText: 'InvalidName' }).waitFor();
    await name.fill('console_group');
    await page.getByText('The name can be used.').waitFor();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('cell', { name: 'console_group', exact: true }).waitFor();
    await page.getByLabel('Search by name').fill('console');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('link', { name: 'View DEFAULT_GROUP' }).waitFor({ state: 'detached' });
    await shot(page, '03-consumer-groups');

    step = 'subscribe the product to the group';
    await page.getByRole('link', { name: 'Server-side Subscription' }).click();
    await page.getByRole('button', { name: 'Create Subscription' }).click();
    const dlg = page.getByRole('dialog');
    await dlg.getByLabel('status').check();
    await dlg.getByLabel('console_group').check();
    await dlg.getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('cell', { name: env.PK, exact: true }).waitFor();
    await shot(page, '04-subscriptions');

    step = 'publish; the status shows the backlog and the Clear button';
    await publish(3, 40);
    await page.getByRole('link', { name: 'Consumer Groups' }).click();
    await page.getByRole('link', { name: 'View console_group' }).click();
    await page.getByRole('tab', { name: 'Consumer Group Status' }).waitFor();
    // 3 messages and the online and offline status of each mosquitto_pub connection.
    await page.locator('#accumulated').filter({ hasText: /^9/ }).waitFor();
    await page.getByRole('button', { name: 'Clear' }).waitFor();
    await shot(page, '05-group-status-backlog');

    step = 'Clear: the button disappears';
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.locator('#accumulated').filter({ hasText: /^0/ }).waitFor();
    await page.getByRole('button', { name: 'Clear' }).waitFor({ state: 'detached' });

    step = 'a consumer with a hostile client id comes online and consumes';
    gid = await groupId(page);
    reader = consumer(gid, '<img src=x onerror=window.__pwned=1>');
    await page.getByRole('cell', { name: '<img src=x onerror=window.__pwned=1>' }).waitFor();
    await publish(2, 41);
    await page.getByText(/^[1-9]\d* messages\/min$/).waitFor();
    await page.locator('#accumulated').filter({ hasText: /^0/ }).waitFor();
    await shot(page, '06-group-status');
    await notPwned(page);

    step = 'Unsubscribe is refused for the only group';
    await page.getByRole('tab', { name: 'Subscribed Products' }).click();
    await page.getByRole('button', { name: 'Unsubscribe' }).click();
    await page.getByRole('dialog').getByText('is the only consumer group of the subscription').waitFor();
    await shot(page, '07-unsubscribe-refused');
    await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();

    step = 'an alert rule created and shown';
    await page.getByRole('tab', { name: 'Alert Settings' }).click();
    await page.getByRole('button', { name: 'Create Alert Rule' }).click();
    const alert = page.getByRole('dialog');
    await alert.getByLabel('Name').fill('backlog_high');
    await alert.getByLabel('Threshold').fill('10');
    await alert.getByLabel('Callback URL').fill('http://127.0.0.1:9/alert');
    await alert.getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('cell', { name: 'backlog_high' }).waitFor();
    await page.getByRole('cell', { name: 'accumulatedCount > 10' }).waitFor();
    await shot(page, '08-alert-settings');

    step = 'a rule with a syntax error shows it at its line; the test pane shows a result';
    await page.getByRole('link', { name: 'Rules' }).click();
    await page.getByRole('link', { name: 'Create Rule' }).click();
    await page.getByLabel('Rule name').fill('hot_devices');
    await page.getByLabel('SQL').fill(`SELECT temperature AS t\nFROM "/${env.PK}/+/user/update"\nWHERE (temperature > 38`);
    await page.getByLabel(/^Actions/).fill(`amqp ${gid}`);
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('#rule-problems').getByText(/line 3/).waitFor();
    await shot(page, '09-rule-error');
    await page.getByLabel('SQL').fill(`SELECT temperature AS t, deviceName() AS dn\nFROM "/${env.PK}/+/user/update"\nWHERE temperature > 38`);
    await page.getByLabel('Topic', { exact: true }).fill(`/${env.PK}/${env.DEVICE_NAME}/user/update`);
    await page.getByLabel('Payload', { exact: true }).fill('{"temperature": 40}');
    await page.getByRole('button', { name: 'Run test' }).click();
    await page.locator('#test-result').getByText('"t": 40').waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved and in force.').waitFor();
    await shot(page, '10-rule-test');

    step = 'a device created, its secret shown once';
    await page.getByRole('link', { name: 'Devices' }).click();
    await page.getByRole('cell', { name: env.EVIL_CLIENT_ID_SHOWN }).waitFor();
    await page.getByRole('button', { name: 'Create Device' }).click();
    await page.getByLabel(/^Device name/).fill('console_dev1');
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    const secret = (await page.locator('#device-secret').textContent()).trim();
    if (secret.length < 16) throw new Error(`the secret shown is ${JSON.stringify(secret)}`);
    await shot(page, '11-device-created');
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('cell', { name: 'console_dev1', exact: true }).waitFor();
    if ((await page.content()).includes(secret)) throw new Error('the secret is shown again after the dialog');
    await shot(page, '12-devices');
    await notPwned(page);

    step = 'Delete: refused while subscribed, then done';
    reader.connection.close();
    reader = null;
    await page.getByRole('link', { name: 'Consumer Groups' }).click();
    await page.getByRole('row', { name: /console_group/ }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('dialog').getByRole('alert').waitFor();
    const refusal = await page.getByRole('dialog').getByRole('alert').textContent();
    if (!/subscri/i.test(refusal)) throw new Error(`the refusal does not name the subscription: ${refusal}`);
    await shot(page, '13-delete-refused');
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('link', { name: 'Server-side Subscription' }).click();
    await page.getByRole('row', { name: new RegExp(env.PK) }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByText('No subscription yet.').waitFor();
    await page.getByRole('link', { name: 'Rules' }).click();
    await page.getByRole('row', { name: /hot_devices/ }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByText('No rule yet.').waitFor();
    await page.getByRole('link', { name: 'Consumer Groups' }).click();
    await page.getByRole('row', { name: /console_group/ }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.getByRole('cell', { name: 'console_group', exact: true }).waitFor({ state: 'detached' });

    step = 'phone width';
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: 'Consumer Groups' }).click();
    await page.getByRole('link', { name: 'View DEFAULT_GROUP' }).waitFor();
    await shot(page, '14-phone-consumer-groups');

    step = 'sign out';
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/console\/login$/);

  } catch (e) {
    problems.push(`step "${step}": ${e.message.split('\n')[0]}`);
    await shot(page, 'failed').catch(() => {});
  } finally {
    if (reader) reader.connection.close();
    evil.kill();
    await browser.close();
  }
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exit(1);
  }
  console.log('console browser test: every step passed');
  process.exit(0);
}

/** Fails when markup from a client id ran on the page shown. */
async function notPwned(page) {
  if ((await page.evaluate(() => window.__pwned)) !== undefined) problems.push(`a script inside a client id ran (step "${step}")`);
}

/** The consumer group id of the details page shown. */
async function groupId(page) {
  return decodeURIComponent(new URL(page.url()).hash.split('/')[2].split('?')[0]);
}

main().catch((e) => { console.error(e); process.exit(1); });
