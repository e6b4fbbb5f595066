#!/bin/bash
# Same configuration contract as the official apache/kafka image: every KAFKA_<NAME>
# variable becomes a server property (lower-cased, "_" -> ".", "__" -> "_", "___" -> "-"),
# CLUSTER_ID formats the log dir once.
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
while IFS='=' read -r var _; do
  case "$var" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JMX_OPTS | KAFKA_LOG4J_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${var#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!var}" >>"$props"
done < <(env)
: "${CLUSTER_ID:?set CLUSTER_ID (22-character base64 UUID) to format the KRaft log dir}"
java_cp=(-cp "/opt/kafka/libs/*" -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties)
java -Xmx128m "${java_cp[@]}" kafka.tools.StorageTool format --ignore-formatted \
  -t "$CLUSTER_ID" -c "$props" >/dev/null
# shellcheck disable=SC2086  # KAFKA_HEAP_OPTS / KAFKA_OPTS are word lists by contract
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} -XX:+UseG1GC -Djava.awt.headless=true \
  ${KAFKA_OPTS:-} "${java_cp[@]}" kafka.Kafka "$props"
