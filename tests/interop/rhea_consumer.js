// A consumer written the way the modelled platform's Node.js sample is (rhea, amqps with
// transport 'tls', idle_time_out 60000, manual accept), signing its own login.
// Env: HOST PORT CA ACCESS_KEY_ID ACCESS_KEY_SECRET GROUP COUNT TOPIC_SUFFIX
// Prints one JSON line per data message; exits 0 after COUNT of them, 1 on error or timeout.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const container = require('rhea');

const env = process.env;
const timestamp = Date.now();
const clientId = 'rhea-' + process.pid;
const username = clientId + '|authMode=aksign,signMethod=hmacsha1,timestamp=' + timestamp +
  ',authId=' + env.ACCESS_KEY_ID + ',iotInstanceId=,consumerGroupId=' + env.GROUP + '|';
const password = crypto.createHmac('sha1', env.ACCESS_KEY_SECRET)
  .update('authId=' + env.ACCESS_KEY_ID + '&timestamp=' + timestamp).digest('base64');

const want = parseInt(env.COUNT, 10);
let got = 0;
const timer = setTimeout(() => { console.error('timeout after ' + got + ' messages'); process.exit(1); }, 30000);

const connection = container.connect({
  host: env.HOST,
  port: parseInt(env.PORT, 10),
  transport: 'tls',
  ca: [fs.readFileSync(env.CA)],
  servername: 'localhost',
  reconnect: false,
  idle_time_out: 60000,
  username: username,
  password: password,
});
connection.open_receiver({ autoaccept: false });

container.on('message', (context) => {
  const msg = context.message;
  const topic = msg.application_properties.topic;
  const body = Buffer.from(msg.body.content).toString();
  context.delivery.accept();
  if (!topic.endsWith(env.TOPIC_SUFFIX)) return;
  console.log(JSON.stringify({
    messageId: msg.application_properties.messageId,
    amqpMessageId: msg.message_id,
    topic: topic,
    generateTime: msg.application_properties.generateTime,
    body: body,
  }));
  got += 1;
  if (got === want) {
    clearTimeout(timer);
    connection.close();
  }
});
container.on('connection_close', () => process.exit(got === want ? 0 : 1));
container.on('error', (e) => { console.error('error: ' + e); process.exit(1); });
container.on('disconnected', (context) => {
  if (got !== want) { console.error('disconnected: ' + (context.error || 'no error')); process.exit(1); }
});
