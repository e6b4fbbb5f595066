#!/bin/bash
# Minimal kafka-run-class.sh: run a Kafka tool class quietly (warnings to stderr).
exec java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "/opt/kafka/libs/*" \
  -Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties "$@"
