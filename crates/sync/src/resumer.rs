//! What the message a run records when it stops early tells its reader to do. That depends on
//! who resumes the run: a person with `adsync sync`, or the service, whose worker requeues it
//! (a worker then resumes it from its checkpoint) and whose tenant settings live behind its API.

/// Who resumes a run that stopped early, and so what its recorded message advises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resumer {
    /// A person, running `adsync sync` again.
    #[default]
    Cli,
    /// The service: the run is requeued and a worker resumes it from its checkpoint.
    Service,
}

impl Resumer {
    /// Stopped by a signal (a person's Ctrl-C, a worker's shutdown) or by a cancel asked through
    /// the API.
    pub(crate) fn interrupted(self) -> String {
        match self {
            Self::Cli => "interrupted; run adsync sync again to resume".to_owned(),
            // A worker stops a run for its own shutdown (the run is requeued) or for a
            // cancel asked through the API (the settle then records `cancelled` instead).
            Self::Service => "interrupted by its worker; unless it was cancelled, it is requeued and a worker resumes it from its checkpoint"
                .to_owned(),
        }
    }

    /// Stopped because the platform kept failing.
    pub(crate) fn platform_down(self, e: &dyn std::fmt::Display) -> String {
        match self {
            Self::Cli => format!("{e}; run adsync sync again later to resume"),
            Self::Service => {
                format!("{e}; requeued with a backoff, a worker resumes it from its checkpoint")
            }
        }
    }

    /// Stopped because the database failed.
    pub(crate) fn store_down(self, e: &dyn std::fmt::Display) -> String {
        match self {
            Self::Cli => format!("{e}; nothing stored was lost, run adsync sync again to resume"),
            Self::Service => format!(
                "{e}; nothing stored was lost; requeued with a backoff, a worker resumes it from its checkpoint"
            ),
        }
    }

    /// Failed for good: the platform refused something no retry changes. Wrong credentials
    /// get the advice of where they are set.
    pub(crate) fn failed(self, tenant: &str, e: &adsync_client::Error) -> String {
        match (self, e) {
            (Self::Cli, adsync_client::Error::InvalidCredentials { .. }) => {
                format!("{e}; {}", CLI_CREDENTIALS)
            }
            (Self::Service, adsync_client::Error::InvalidCredentials { .. }) => format!(
                "{e}; set the tenant's credentials again (PATCH /api/v1/tenants/{tenant} with \"credentials\"), then start a run"
            ),
            _ => e.to_string(),
        }
    }
}

/// Where `adsync sync` takes the platform's credentials from.
pub const CLI_CREDENTIALS: &str =
    "check AD_PLATFORM_EMAIL and AD_PLATFORM_PASSWORD (or the --credentials-file)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resumer_names_what_resumes_the_run() {
        assert!(Resumer::Cli.interrupted().contains("adsync sync again"));
        assert!(!Resumer::Service.interrupted().contains("adsync sync"));
        assert!(Resumer::Service.interrupted().contains("requeued"));
        let down = "the platform answered 503";
        assert!(Resumer::Cli.platform_down(&down).starts_with(down));
        assert!(
            !Resumer::Service
                .platform_down(&down)
                .contains("adsync sync")
        );
        assert!(!Resumer::Service.store_down(&down).contains("adsync sync"));
        assert!(
            Resumer::Service
                .store_down(&down)
                .contains("nothing stored was lost")
        );
    }

    #[test]
    fn wrong_credentials_point_to_where_they_are_set() {
        let e = adsync_client::Error::InvalidCredentials {
            message: "Invalid credentials".into(),
        };
        let cli = Resumer::Cli.failed("t1", &e);
        assert!(cli.contains("AD_PLATFORM_PASSWORD"), "{cli}");
        let service = Resumer::Service.failed("t1", &e);
        assert!(service.contains("PATCH /api/v1/tenants/t1"), "{service}");
        assert!(!service.contains("AD_PLATFORM"), "{service}");
        let other = adsync_client::Error::TokenExpired;
        assert_eq!(Resumer::Service.failed("t1", &other), other.to_string());
    }
}
