//! One module per console page.

mod accounts;
mod admin;
mod dashboard;
mod keys;
mod networks;
mod not_found;
mod profile;
mod sign_in;

pub use accounts::AccountsPage;
pub use admin::AdminPage;
pub use dashboard::DashboardPage;
pub use keys::KeysPage;
pub use networks::{NetworkPage, NetworksPage, NewNetworkPage};
pub use not_found::NotFoundPage;
pub use profile::ProfilePage;
pub use sign_in::SignInPage;
