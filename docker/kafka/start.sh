#!/bin/sh
# The compose stack's Kafka (apache/kafka image): KRaft, one node, SASL (SCRAM-SHA-512) on every
# client listener, ACLs enforced (StandardAuthorizer, nothing allowed without an ACL).
#
# Why a script instead of the image's KAFKA_* variables: SCRAM users must exist when the
# storage is formatted (KRaft keeps them in its metadata), and the image's own start cannot
# add them. Passwords come from the compose secrets in /run/secrets, never from variables.
# The users' passwords are set on the first start (formatting); to change one later use
# kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]' (docs/security.md).
set -eu

secret() { tr -d '\n' < "/run/secrets/$1"; }
ADMIN_PASSWORD=$(secret kafka_admin_password)
WORKER_PASSWORD=$(secret kafka_worker_password)
PRODUCER_PASSWORD=$(secret kafka_producer_password)
GATEWAY_PASSWORD=$(secret kafka_gateway_password)
CONF=/tmp/server.properties
JAAS="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$ADMIN_PASSWORD\";"

umask 077
cat > "$CONF" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
# INTERNAL for the containers (kafka:9092), EXTERNAL for the host (127.0.0.1:9094 only);
# the controller listens inside the container only.
listeners=INTERNAL://:9092,CONTROLLER://localhost:9093,EXTERNAL://:9094
advertised.listeners=INTERNAL://kafka:9092,EXTERNAL://localhost:9094
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=$JAAS
listener.name.external.scram-sha-512.sasl.jaas.config=$JAAS
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# the broker reaches its own controller as ANONYMOUS over the container-local listener
super.users=User:admin;User:ANONYMOUS
log.dirs=/var/lib/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPERTIES

cat > /tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$JAAS
PROPERTIES

if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$CONF" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$ADMIN_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=worker,password=$WORKER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=producer,password=$PRODUCER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=gateway,password=$GATEWAY_PASSWORD]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONF"
