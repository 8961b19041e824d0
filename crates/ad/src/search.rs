//! Searches: paged, or in one answer where entries are small; and searches of a managed OU's
//! tree one container at a time.

use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{LdapError, ResultEntry, Scope, SearchEntry, SearchResult};

use writeback_core::Dn;

use crate::{AdConn, AdError};

/// Microsoft's advice for portable paging and ranged retrieval.
const PAGE: i32 = 500;
/// Result codes of a search the server cut short for its limits.
const TIME_LIMIT_EXCEEDED: u32 = 3;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const ADMIN_LIMIT_EXCEEDED: u32 = 11;

/// DCs (by URL) that have cut an unpaged search short: asked paged from then on, for the life
/// of the process (the daemon's too), instead of paying a capped read, or MaxQueryDuration's
/// wait, on every cycle.
static CUTS_UNPAGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn cuts_unpaged(url: &str) -> bool {
    CUTS_UNPAGED.lock().is_ok_and(|dcs| dcs.iter().any(|u| u == url))
}

/// How a search takes its entries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    /// A page at a time: for entries that can be large (members), so that neither side holds
    /// the whole answer at once.
    Paged,
    /// In one answer where the server allows it: for entries of a few short attributes (see
    /// [`AdConn::search_all`]).
    Whole,
}

/// What can hold a group inside a managed OU.
const CONTAINERS: &str = "(|(objectClass=organizationalUnit)(objectClass=container))";

impl AdConn {
    /// Every entry of a search; referrals (a subtree search at the domain root returns one per
    /// other partition) and intermediate messages are skipped.
    ///
    /// `Answer::Whole` asks for one unpaged answer first. Samba pays for a paged search with a
    /// second pass over the result, one lookup per entry: 10,000 groups cost its single process
    /// 2.3-2.8 s paged, 0.2-0.5 s unpaged, whatever the page size. A server that caps unpaged
    /// answers (Windows: MaxPageSize, 1,000 entries by default) ends the search with
    /// sizeLimitExceeded or adminLimitExceeded, or past MaxQueryDuration (120 s) with
    /// timeLimitExceeded: then it is asked again, paged (each page a short search of its own).
    pub(crate) async fn search_all(
        &mut self,
        answer: Answer,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
        controls: Vec<RawControl>,
    ) -> Result<Vec<SearchEntry>, LdapError> {
        let wanted = |e: &ResultEntry| !e.is_ref() && !e.is_intermediate();
        if matches!(answer, Answer::Whole) && !cuts_unpaged(&self.url) {
            let res = self.op().with_controls(controls.clone()).search(base, scope, filter, attrs.clone()).await?;
            if !matches!(res.1.rc, TIME_LIMIT_EXCEEDED | SIZE_LIMIT_EXCEEDED | ADMIN_LIMIT_EXCEEDED) {
                let (entries, _) = res.success()?;
                return Ok(entries.into_iter().filter(wanted).map(SearchEntry::construct).collect());
            }
            // The tests assert this line: the path every Windows DC takes past 1,000 entries.
            tracing::info!(
                base,
                rc = res.1.rc,
                entries = res.0.iter().filter(|e| wanted(e)).count(),
                dc = %self.url,
                "the DC cut an unpaged search short at its limit (Windows: MaxPageSize 1,000 entries, \
                 MaxQueryDuration 120 s): reading it again, paged, and this DC's searches paged from now on"
            );
            if let Ok(mut dcs) = CUTS_UNPAGED.lock() {
                dcs.push(self.url.clone());
            }
        }
        // A page at a time, each page a request of its own (and counted as one by `op`).
        let mut out = Vec::new();
        let mut cookie = Vec::new();
        loop {
            let mut with_page = controls.clone();
            with_page.push(PagedResults { size: PAGE, cookie: std::mem::take(&mut cookie) }.into());
            let SearchResult(entries, result) =
                self.op().with_controls(with_page).search(base, scope, filter, attrs.clone()).await?;
            cookie = next_cookie(&result.ctrls);
            let (entries, _) = SearchResult(entries, result).success()?;
            out.extend(entries.into_iter().filter(wanted).map(SearchEntry::construct));
            if cookie.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The containers of the tree below `ou` (a managed OU): `ou` first, then every OU or
    /// container below it, from one indexed search. Listed once per OU and reused by every
    /// `search_tree` of a read.
    pub(crate) async fn tree(&mut self, ou: &str) -> Result<Vec<String>, AdError> {
        let containers = self
            .search_all(Answer::Whole, ou, Scope::Subtree, CONTAINERS, vec!["1.1".into()], vec![])
            .await
            .map_err(|e| crate::missing_ou(ou, e))?;
        let mut bases = vec![ou.to_string()];
        bases.extend(containers.into_iter().map(|e| e.dn).filter(|dn| Dn::new(dn.as_str()) != ou));
        Ok(bases)
    }

    /// `filter` over a tree (`bases`, from [`AdConn::tree`]), as one-level searches of each
    /// container. Why not one subtree search: Samba evaluates a subtree search whose filter it
    /// cannot answer from an index (a `uSNChanged` range, our marker) over the whole partition,
    /// but keeps a one-level index: on a DC of 100,000 objects the delta cycle's search took
    /// 1.1 s as a subtree and 0.06 s one level at a time. Windows answers both from indexes.
    pub(crate) async fn search_tree(
        &mut self,
        answer: Answer,
        bases: &[String],
        filter: &str,
        attrs: Vec<String>,
        controls: Vec<RawControl>,
    ) -> Result<Vec<SearchEntry>, AdError> {
        let mut out = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            match self.search_all(answer, base, Scope::OneLevel, filter, attrs.clone(), controls.clone()).await {
                Ok(entries) => out.extend(entries),
                // A container below the OU removed since it was listed holds nothing of ours.
                Err(LdapError::LdapResult { result }) if result.rc == 32 && i > 0 => {}
                Err(e) => return Err(crate::missing_ou(base, e)),
            }
        }
        Ok(out)
    }
}

/// The cookie that asks for the next page; empty when the answer is complete (RFC 2696).
fn next_cookie(ctrls: &[Control]) -> Vec<u8> {
    ctrls
        .iter()
        .find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => Some(raw.parse::<PagedResults>().cookie),
            _ => None,
        })
        .unwrap_or_default()
}
