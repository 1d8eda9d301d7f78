-- name: comfort
-- description: Comfort class from temperature and humidity, using a script function.
-- action: amqp DEFAULT_GROUP tag=${class}
SELECT CASE WHEN temperature BETWEEN 18 AND 24 AND humidity < 60 THEN 'ok' ELSE 'poor' END AS class,
       c_to_f(temperature) AS fahrenheit,
       "readings[0]" AS first_reading
FROM "/a1demo/+/user/update"
WHERE temperature IS NOT NULL AND deviceName() NOT IN ('test1', 'test2')
