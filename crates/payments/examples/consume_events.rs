//! A consumer of the payment events: a durable JetStream pull consumer on stream `PAYMENTS`
//! that prints each CloudEvent and acknowledges it, resuming where it left off after a restart.
//!
//! `NATS_URL=nats://127.0.0.1:4222 cargo run -p payments --example consume_events [durable-name]`

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let durable = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "billing-consumer".into());
    let stream_name = std::env::var("PAYMENTS_STREAM").unwrap_or_else(|_| "PAYMENTS".into());
    let context = jetstream::new(async_nats::connect(&url).await?);
    let stream = context.get_stream(&stream_name).await?;
    // Durable: the server remembers what this consumer has acknowledged.
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    println!("consuming {stream_name} as {durable} (Ctrl-C to stop)");
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
        // Handle the event idempotently: a redelivery carries the same event id.
        println!(
            "{} {} {} {}",
            event["time"].as_str().unwrap_or_default(),
            event["id"].as_str().unwrap_or_default(),
            event["type"].as_str().unwrap_or_default(),
            event["data"]["status"].as_str().unwrap_or_default(),
        );
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}
