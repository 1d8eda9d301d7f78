-- name: thing_model_flat
-- description: Every property of thermometer posts, flattened, tagged with the device name.
-- action: amqp DEFAULT_GROUP tag=${dn}
SELECT thingPropertyFlatMap(), deviceName() AS dn, timestamp_utc('yyyy-MM-dd''T''HH:mm:ss.SSS''Z''') AS at
FROM "/sys/a1demo/+/thing/event/property/post"
