//! What only a stand-in can provoke: throttling, unprocessed batch items, cancelled
//! transactions and a condition that fails without returning the item, answered by a small
//! server as DynamoDB answers; and an endpoint that does not answer at all.

use super::*;

// ---------------------------------------------------------------- a stand-in for DynamoDB

/// A local server that answers DynamoDB requests as a test says, for what the emulator cannot
/// be made to do (throttle, leave batch items unprocessed, cancel a transaction).
struct StandIn {
    endpoint: String,
    /// The operation (`GetItem`, ...) of every request, in order.
    calls: Arc<Mutex<Vec<String>>>,
}

/// What the stand-in answers: status and JSON body, given the operation, the request body and
/// how many requests of that operation came before.
type Answer = dyn Fn(&str, &Value, usize) -> (u16, Value) + Send + Sync;

impl StandIn {
    async fn start(
        answer: impl Fn(&str, &Value, usize) -> (u16, Value) + Send + Sync + 'static,
    ) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::<String>::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let recorded = Arc::clone(&calls);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, calls) = (Arc::clone(&answer), Arc::clone(&recorded));
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (answer, calls) = (Arc::clone(&answer), Arc::clone(&calls));
                    async move {
                        let operation = request
                            .headers()
                            .get("x-amz-target")
                            .and_then(|target| target.to_str().ok())
                            .and_then(|target| target.rsplit('.').next())
                            .unwrap_or_default()
                            .to_owned();
                        let body = read_body(request.into_body()).await;
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let before = {
                            let mut calls = calls.lock().unwrap();
                            let before = calls.iter().filter(|call| **call == operation).count();
                            calls.push(operation.clone());
                            before
                        };
                        let (status, reply) = answer(&operation, &body, before);
                        let response = Response::builder()
                            .status(status)
                            .header("content-type", "application/x-amz-json-1.0")
                            .body(reply.to_string())
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        StandIn { endpoint, calls }
    }

    /// A store on table `fake` of this server, with the production retry policy but 1 ms
    /// backoff, so that a test of eight attempts takes no time.
    async fn store(&self) -> (DynamoDbStore, u32) {
        let credentials = Credentials::new("test", "test", None, None, "stand-in");
        let production = client_config(&sdk_config(&self.endpoint, "eu-west-2", credentials).await);
        let attempts = production.retry_config().unwrap().max_attempts();
        let config = production
            .to_builder()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(5)),
            )
            .build();
        (
            DynamoDbStore::unchecked(Client::from_conf(config), "fake"),
            attempts,
        )
    }

    fn calls(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| *call == operation)
            .count()
    }
}

async fn read_body(mut body: Incoming) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|context| std::pin::Pin::new(&mut body).poll_frame(context)).await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    bytes
}

fn dynamodb_error(kind: &str, message: &str) -> (u16, Value) {
    (
        400,
        json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
            "message": message,
        }),
    )
}

// ---------------------------------------------------------------- throttling and retries

#[tokio::test]
async fn throttled_requests_are_retried_with_backoff() {
    let stand_in = StandIn::start(|operation, _, before| match (operation, before) {
        ("GetItem", 0 | 1) => dynamodb_error(
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        _ => (200, json!({})),
    })
    .await;
    let (store, _) = stand_in.store().await;

    let approval = store.approval(&RunId::new(), "approval").await.unwrap();

    assert_eq!(approval, None);
    assert_eq!(stand_in.calls("GetItem"), 3);
}

#[tokio::test]
async fn throttling_that_does_not_stop_is_reported_after_every_attempt() {
    let stand_in =
        StandIn::start(|_, _, _| dynamodb_error("ThrottlingException", "Rate exceeded")).await;
    let (store, attempts) = stand_in.store().await;

    let error = store
        .renew_lease("pipeline/api", "run-a", Duration::from_secs(30))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::Throttled { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("renewing a lease"), "{message}");
    assert!(message.contains("dynamodb://fake"), "{message}");
    assert!(message.contains("capacity"), "{message}");
    assert_eq!(stand_in.calls("UpdateItem"), attempts as usize);
    assert!(attempts > 3, "more patient than the SDK's default");
}

#[tokio::test]
async fn unprocessed_batch_items_are_written_again() {
    let stand_in = StandIn::start(|operation, body, before| match (operation, before) {
        ("BatchWriteItem", 0 | 1) => (200, json!({ "UnprocessedItems": body["RequestItems"] })),
        _ => (200, json!({ "UnprocessedItems": {} })),
    })
    .await;
    let (store, _) = stand_in.store().await;
    let events: Vec<(u64, String)> = (1..=30).map(|seq| (seq, "{}".into())).collect();

    store.append_events(&RunId::new(), &events).await.unwrap();

    // 25 events, handed back twice, then 5.
    assert_eq!(stand_in.calls("BatchWriteItem"), 4);
}

#[tokio::test]
async fn conflicting_transactions_are_tried_again_and_failed_conditions_are_not() {
    let stand_in = StandIn::start(|operation, body, before| {
        let items = body["TransactItems"].as_array().map_or(0, Vec::len);
        let cancelled = |first: &str| {
            let mut reasons = vec![json!({ "Code": first, "Message": "refused" })];
            reasons.resize(items, json!({ "Code": "None" }));
            (
                400,
                json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                    "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
                    "CancellationReasons": reasons,
                }),
            )
        };
        match (operation, before) {
            ("TransactWriteItems", 0) => cancelled("TransactionConflict"),
            ("TransactWriteItems", 1) => (200, json!({})),
            ("TransactWriteItems", _) => cancelled("ConditionalCheckFailed"),
            _ => (200, json!({})),
        }
    })
    .await;
    let (store, _) = stand_in.store().await;
    let run = run_of(vec![stage_with_output("build", 10)]);

    store.create_run(&run).await.unwrap();
    assert_eq!(stand_in.calls("TransactWriteItems"), 2);

    let error = store.create_run(&run).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::RunExists { id } if *id == run.id),
        "{error:?}"
    );
    assert_eq!(stand_in.calls("TransactWriteItems"), 3);
}

#[tokio::test]
async fn an_unreachable_endpoint_says_what_to_check() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let stand_in = StandIn {
        endpoint: format!("http://{closed}"),
        calls: Default::default(),
    };
    let (store, _) = stand_in.store().await;

    let error = store.get_run(&RunId::new()).await.unwrap_err();

    assert!(matches!(error, StoreError::DynamoDb { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("dynamodb://fake failed while reading a run"),
        "{message}"
    );
    assert!(message.contains("AWS_ENDPOINT_URL"), "{message}");
}

#[tokio::test]
async fn an_approval_decided_elsewhere_is_read_back_when_dynamodb_does_not_return_it() {
    // Older DynamoDB-compatible services ignore ReturnValuesOnConditionCheckFailure.
    let first = ApprovalRecord {
        approved: true,
        by: "ana".into(),
        at: "2026-11-26T10:00:00Z".into(),
        comment: None,
    };
    let stored = json!({
        "Item": {
            "pk": { "S": "run#x" },
            "sk": { "S": "approval#approval" },
            "record": { "S": serde_json::to_string(&first).unwrap() },
        }
    });
    let stand_in = StandIn::start(move |operation, _, _| match operation {
        "PutItem" => dynamodb_error(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ),
        "GetItem" => (200, stored.clone()),
        _ => (200, json!({})),
    })
    .await;
    let (store, _) = stand_in.store().await;
    let second = ApprovalRecord {
        approved: false,
        by: "ben".into(),
        ..first.clone()
    };

    let outcome = store
        .decide_approval(&RunId("x".into()), "approval", &second)
        .await
        .unwrap();

    assert_eq!(outcome, ApprovalOutcome::AlreadyDecided(first));
}
