//! ministack's EC2 Query API, for the network an ECS cluster's awsvpc tasks run on.

use crate::env::TestEnv;

/// One call of ministack's EC2 Query API. ministack routes by the SigV4 credential scope and
/// does not check the signature, so a well-formed header with a dummy signature is enough.
async fn call(env: &TestEnv, endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut body = String::from("Version=2016-11-15");
    for (name, value) in params {
        body.push('&');
        body.push_str(name);
        body.push('=');
        for byte in value.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                body.push(byte as char);
            } else {
                body.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/{}/ec2/aws4_request, SignedHeaders=host, Signature=00",
        env.var("AWS_ACCESS_KEY_ID"),
        env.region()
    );
    let (status, text) = crate::support::http::request(
        "POST",
        &format!("{endpoint}/"),
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            ),
            ("authorization", auth),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "EC2 {params:?}: {text}");
    text
}

/// The text of the first `<tag>` element of `xml`.
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    xml[start..end].to_owned()
}

/// The network a cluster's awsvpc tasks run on.
pub struct Network {
    pub subnet: String,
    pub security_group: String,
}

/// A VPC with one subnet and a security group named after `cluster`.
pub async fn network(env: &TestEnv, endpoint: &str, cluster: &str) -> Network {
    let vpc = xml_value(
        &call(
            env,
            endpoint,
            &[("Action", "CreateVpc"), ("CidrBlock", "10.42.0.0/16")],
        )
        .await,
        "vpcId",
    );
    let subnet = xml_value(
        &call(
            env,
            endpoint,
            &[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", "10.42.1.0/24"),
            ],
        )
        .await,
        "subnetId",
    );
    let security_group = xml_value(
        &call(
            env,
            endpoint,
            &[
                ("Action", "CreateSecurityGroup"),
                ("GroupName", &format!("{cluster}-laravel")),
                ("GroupDescription", "envelope laravel tasks"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    Network {
        subnet,
        security_group,
    }
}
