//! An SNS topic on ministack with an SQS queue subscribed to it: where a test reads what a run
//! published (an approval notice, the end of a run).

use crate::env::unique;
use serde_json::Value;
use std::time::Duration;

/// A queue subscribed to a topic.
pub struct Subscriber {
    pub topic: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Subscriber {
    /// Create (or find) topic `name` and subscribe a new queue to it.
    pub async fn subscribe(config: &aws_config::SdkConfig, name: &str) -> Subscriber {
        let sns = aws_sdk_sns::Client::new(config);
        let topic = sns
            .create_topic()
            .name(name)
            .send()
            .await
            .unwrap()
            .topic_arn()
            .unwrap()
            .to_owned();
        let sqs = aws_sdk_sqs::Client::new(config);
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("subscriber"))
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap();
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .send()
            .await
            .unwrap();
        Subscriber {
            topic,
            sqs,
            queue_url,
        }
    }

    /// Every message (SNS' `Message`, with its `Subject` on a first line `Subject: …` when it
    /// has one) that contains `needle`: the queue is read until one has arrived and the queue
    /// is quiet, or for about 25 seconds. Other runs may publish to the same topic.
    pub async fn messages_containing(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for _ in 0..20 {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for body in received.messages().iter().filter_map(|m| m.body()) {
                let envelope: Value =
                    serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
                let message = envelope["Message"].as_str().unwrap_or(body);
                let text = match envelope["Subject"].as_str() {
                    Some(subject) => format!("Subject: {subject}\n{message}"),
                    None => message.to_owned(),
                };
                if text.contains(needle) {
                    found.push(text);
                }
            }
            if !found.is_empty() && received.messages().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        found
    }
}
