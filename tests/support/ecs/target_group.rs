//! A target group on ministack's Elastic Load Balancing (v2): target type `ip`, HTTP on the
//! web app's port with its health check path, under a unique name, deleted when dropped.

use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};

use super::web::{UP_PATH, WEB_PORT};
use crate::env::TestEnv;

/// An `ip` target group for the web app's tasks.
pub struct TargetGroup {
    env: &'static TestEnv,
    pub name: String,
    pub arn: String,
}

impl TargetGroup {
    pub async fn create(env: &'static TestEnv) -> TargetGroup {
        let elb = client(env).await;
        // Target group names have at most 32 characters.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("e2e-web-{:x}", nanos % (1 << 60));
        let created = elb
            .create_target_group()
            .name(&name)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(WEB_PORT))
            .target_type(TargetTypeEnum::Ip)
            .health_check_path(UP_PATH)
            .send()
            .await
            .unwrap();
        let arn = created.target_groups()[0]
            .target_group_arn()
            .expect("CreateTargetGroup returns the group's ARN")
            .to_owned();
        TargetGroup { env, name, arn }
    }
}

async fn client(env: &TestEnv) -> aws_sdk_elasticloadbalancingv2::Client {
    aws_sdk_elasticloadbalancingv2::Client::new(&env.sdk_config(env.endpoint()).await)
}

impl Drop for TargetGroup {
    fn drop(&mut self) {
        let (env, arn) = (self.env, self.arn.clone());
        crate::support::cleanup::on_own_runtime(async move {
            let _ = client(env)
                .await
                .delete_target_group()
                .target_group_arn(arn)
                .send()
                .await;
        });
    }
}
