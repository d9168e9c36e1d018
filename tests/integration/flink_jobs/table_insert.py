"""A bounded job that submits through the Table API (``execute_sql`` of an INSERT), not ``env.execute``."""

from pyflink.table import EnvironmentSettings, TableEnvironment

t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t_env.execute_sql("CREATE TABLE numbers (n BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '20')")
t_env.execute_sql("CREATE TABLE sink (n BIGINT) WITH ('connector' = 'blackhole')")
t_env.execute_sql("INSERT INTO sink SELECT n FROM numbers")
