#!/bin/sh
# One-shot: the ACLs of the compose stack's principals (engine/kafka_secure.py gives the same
# rights to the local test broker). The workers (User:worker) read the input, write the
# dead-letter topic (and repair it: partitions, configs; streams/dead_letter_topic.py) and own everything named after their app_id (bundles, ledger changelog,
# Faust's topics, consumer groups); the generator (User:producer) writes the input; the CRM
# gateway (User:gateway) writes the input and the dead-letter topic and owns its state topic.
# Nobody else may do anything (allow.everyone.if.no.acl.found=false). Idempotent.
set -eu
: "${INPUT_TOPIC:=crm.events}" "${DEAD_LETTER_TOPIC:=crm.events.dlq}" "${APP_ID:=kpi-engine}"
: "${GATEWAY_STATE_TOPIC:=crm.gateway.state}"
ADMIN_PASSWORD=$(tr -d '\n' < /run/secrets/kafka_admin_password)
umask 077
cat > /tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$ADMIN_PASSWORD";
PROPERTIES
acl() { /opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:9092 \
          --command-config /tmp/admin.properties --add --force "$@"; }
acl --allow-principal User:worker --operation Read --operation Describe --operation Create \
    --topic "$INPUT_TOPIC"
acl --allow-principal User:worker --operation Write --operation Describe --operation Create \
    --operation Alter --operation DescribeConfigs --operation AlterConfigs \
    --topic "$DEAD_LETTER_TOPIC"
acl --allow-principal User:worker --operation All --resource-pattern-type prefixed \
    --topic "$APP_ID" --group "$APP_ID"
acl --allow-principal User:worker --operation IdempotentWrite --operation Describe --cluster
acl --allow-principal User:producer --operation Write --operation Describe --operation Create \
    --topic "$INPUT_TOPIC"
acl --allow-principal User:producer --operation IdempotentWrite --cluster
acl --allow-principal User:gateway --operation Write --operation Describe --operation Create \
    --topic "$INPUT_TOPIC"
acl --allow-principal User:gateway --operation Write --operation Describe --operation Create \
    --topic "$DEAD_LETTER_TOPIC"
acl --allow-principal User:gateway --operation Read --operation Write --operation Describe \
    --operation Create --topic "$GATEWAY_STATE_TOPIC"
acl --allow-principal User:gateway --operation IdempotentWrite --cluster
echo "ACLs in place"
