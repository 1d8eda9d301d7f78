// A long-running consumer for the three-node kill test, written the way the modelled platform's
// Node.js sample is (rhea, manual accept). Env: HOST PORT ACCESS_KEY_ID ACCESS_KEY_SECRET GROUP
// Accepts every message and prints one line per delivery: "<unix ms> <messageId> <body>".
// Reconnects with a freshly signed login whenever the connection goes; runs until stdin closes.
'use strict';
const crypto = require('crypto');
const container = require('rhea');

const env = process.env;
const clientId = 'rhea-kill-' + process.pid;

function connect() {
  const timestamp = Date.now();
  const username = clientId + '|authMode=aksign,signMethod=hmacsha1,timestamp=' + timestamp +
    ',authId=' + env.ACCESS_KEY_ID + ',iotInstanceId=,consumerGroupId=' + env.GROUP + '|';
  const password = crypto.createHmac('sha1', env.ACCESS_KEY_SECRET)
    .update('authId=' + env.ACCESS_KEY_ID + '&timestamp=' + timestamp).digest('base64');
  const connection = container.connect({
    host: env.HOST,
    port: parseInt(env.PORT, 10),
    reconnect: false,
    idle_time_out: 10000,
    username: username,
    password: password,
  });
  connection.open_receiver({ autoaccept: false, credit_window: 64 });
}

let retrying = false;
function retry(why) {
  if (retrying) return;
  retrying = true;
  console.error('rhea: ' + why + ', reconnecting');
  setTimeout(() => { retrying = false; connect(); }, 500);
}

container.on('message', (context) => {
  const msg = context.message;
  const body = Buffer.from(msg.body.content).toString();
  process.stdout.write(Date.now() + ' ' + msg.application_properties.messageId + ' ' + body + '\n');
  context.delivery.accept();
});
container.on('disconnected', (context) => retry('disconnected (' + (context.error || 'no error') + ')'));
container.on('connection_close', () => retry('connection closed'));
container.on('error', (e) => retry('error ' + e));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
connect();
