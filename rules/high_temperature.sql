-- name: high_temperature
-- description: Readings above 38 degrees from any demo device, with the device name.
-- enabled: true
-- data_type: json
-- action: amqp g_hot tag=${dn}
SELECT temperature AS t, deviceName() AS dn, timestamp() AS at
FROM "/a1demo/+/user/update"
WHERE temperature > 38
