-- name: raw_frames
-- description: Binary frames from any device, as Base64, republished to the device's own topic.
-- data_type: binary
-- action: amqp DEFAULT_GROUP
-- action: republish /a1demo/${deviceName()}/user/frames
SELECT to_base64(*) AS frame, deviceName() AS dn, clientIp() AS ip
FROM "/a1demo/+/user/raw"
