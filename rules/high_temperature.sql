-- name: high_temperature
-- description: Readings above 38 degrees from any demo device, with the device name.
-- enabled: true
-- data_type: json
-- action: amqp DEFAULT_GROUP tag=${dn}
SELECT temperature AS t, deviceName() AS dn, timestamp() AS at
FROM "/a1demo/+/user/update"
WHERE temperature > 38
