//! The all-in-one runner: accounts, payments and the gateway in one process, each on its own
//! port and its own database, shut down together (gateway first, so nothing it accepted is cut).

use std::net::SocketAddr;

use anyhow::Context;
use common::config::{ConfigError, Env};
use tokio_util::sync::CancellationToken;

/// The configuration of all three services, read from one environment.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Accounts.
    pub accounts: accounts::AccountsConfig,
    /// Payments.
    pub payments: payments::PaymentsConfig,
    /// The gateway; its upstreams are replaced by the addresses the services actually bind.
    pub gateway: gateway::GatewayConfig,
}

impl StackConfig {
    /// Reads every service's configuration.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            accounts: accounts::AccountsConfig::from_env(env)?,
            payments: payments::PaymentsConfig::from_env(env)?,
            gateway: gateway::GatewayConfig::from_env(env)?,
        })
    }
}

/// The three services, built (databases migrated, ports bound) and ready to run.
pub struct Stack {
    accounts: accounts::Application,
    payments: payments::Application,
    gateway: gateway::Application,
}

impl Stack {
    /// Builds accounts and payments, then points the gateway at the ports they got.
    pub async fn build(config: StackConfig) -> anyhow::Result<Self> {
        let accounts = accounts::Application::build(config.accounts).await?;
        let accounts_url = local_url(accounts.local_addr()?)?;
        let mut payments_config = config.payments;
        payments_config.jwks_url = format!("{accounts_url}.well-known/jwks.json");
        let payments = payments::Application::build(payments_config).await?;
        let mut gateway_config = config.gateway;
        gateway_config.jwks_url = format!("{accounts_url}.well-known/jwks.json");
        gateway_config.set_upstream("accounts", accounts_url);
        gateway_config.set_upstream("payments", local_url(payments.local_addr()?)?);
        let gateway = gateway::Application::build(gateway_config).await?;
        Ok(Self {
            accounts,
            payments,
            gateway,
        })
    }

    /// Where the gateway listens.
    pub fn gateway_addr(&self) -> std::io::Result<SocketAddr> {
        self.gateway.local_addr()
    }

    /// Where accounts listens.
    pub fn accounts_addr(&self) -> std::io::Result<SocketAddr> {
        self.accounts.local_addr()
    }

    /// Where payments listens.
    pub fn payments_addr(&self) -> std::io::Result<SocketAddr> {
        self.payments.local_addr()
    }

    /// Runs everything until `shutdown` fires (or one service fails): the gateway stops taking
    /// requests and drains first, then the services finish theirs and close their databases.
    /// Payment processing stops taking new work at once and finishes what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let services = CancellationToken::new();
        let stop_claiming = shutdown.clone();
        let gateway = {
            let services = services.clone();
            async move {
                let result = self.gateway.run(shutdown).await;
                services.cancel();
                result
            }
        };
        let stop_all = |result: anyhow::Result<()>| {
            if result.is_err() {
                services.cancel();
            }
            result
        };
        let (gateway, accounts, payments) = tokio::join!(
            gateway,
            async { stop_all(self.accounts.run(services.clone()).await) },
            async {
                stop_all(
                    self.payments
                        .run_draining(stop_claiming, services.clone())
                        .await,
                )
            },
        );
        gateway.context("gateway")?;
        accounts.context("accounts")?;
        payments.context("payments")?;
        Ok(())
    }
}

/// `http://` URL for reaching a bound address from this host (wildcards become loopback).
fn local_url(addr: SocketAddr) -> anyhow::Result<url::Url> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    url::Url::parse(&format!("http://{addr}")).context("service address")
}
