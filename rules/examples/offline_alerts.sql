-- name: offline_alerts
-- description: Devices going offline, with their room tag, to the alerts group.
-- action: amqp g_alerts tag=offline
-- error_action: amqp DEFAULT_GROUP
SELECT deviceName, productKey, lastTime, attribute('room') AS room
FROM "/as/mqtt/status/a1demo/+"
WHERE status = 'offline'
