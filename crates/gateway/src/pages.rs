//! Walking the pages of a list RPC, for the compatible lists that page differently from
//! keyward (Masumi's cursors and sizes) or not at all (PSP's and the scoped surface's).

use std::future::Future;

use http::HeaderMap;
use keyward_proto::v1;

use crate::{Upstream, upstream::request};

/// The most items a list RPC answers per page.
pub(crate) const MAX_PAGE_SIZE: i32 = 100;

/// Most keys a list without paging answers (ten pages of ListApiKeys), so one request's
/// cost stays bounded.
pub(crate) const MAX_UNPAGED_KEYS: usize = 1000;

/// What the walker asks of the next page.
#[derive(Debug)]
pub(crate) struct PageRequest {
    /// The token of the page; empty for the first.
    pub(crate) page_token: String,
    /// How many items are still wanted (at least 1).
    pub(crate) wanted: usize,
}

impl PageRequest {
    /// The page size to ask for: what is still wanted, within what a page may hold.
    pub(crate) fn page_size(&self) -> i32 {
        i32::try_from(self.wanted).map_or(MAX_PAGE_SIZE, |wanted| wanted.min(MAX_PAGE_SIZE))
    }
}

/// One page of a list RPC: its items and the token of the next (empty after the last).
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_page_token: String,
}

impl From<v1::ListApiKeysResponse> for Page<v1::ApiKey> {
    fn from(page: v1::ListApiKeysResponse) -> Self {
        Self { items: page.api_keys, next_page_token: page.next_page_token }
    }
}

impl From<v1::ListRpcProviderKeysResponse> for Page<v1::RpcProviderKey> {
    fn from(page: v1::ListRpcProviderKeysResponse) -> Self {
        Self { items: page.rpc_provider_keys, next_page_token: page.next_page_token }
    }
}

/// Up to `limit` items that `keep` accepts, in order, fetching page after page until
/// there are enough or the list ends.
pub(crate) async fn collect<T, Fetched>(
    limit: usize,
    mut fetch: impl FnMut(PageRequest) -> Fetched,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<Vec<T>, tonic::Status>
where
    Fetched: Future<Output = Result<Page<T>, tonic::Status>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    while items.len() < limit {
        let wanted = limit - items.len();
        let page = fetch(PageRequest { page_token, wanted }).await?;
        items.extend(page.items.into_iter().filter(|item| keep(item)).take(wanted));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(items)
}

/// The keys `query` selects, with the caller's forwarded headers, for the compatible lists
/// whose contracts have no paging: at most [`MAX_UNPAGED_KEYS`].
pub(crate) async fn all_api_keys(
    upstream: &Upstream,
    headers: &HeaderMap,
    query: v1::ListApiKeysRequest,
) -> Result<Vec<v1::ApiKey>, tonic::Status> {
    let fetch = |next: PageRequest| {
        let mut client = upstream.api_keys();
        let page = v1::ListApiKeysRequest { page_size: next.page_size(), page_token: next.page_token, ..query.clone() };
        async move { Ok(client.list_api_keys(request(headers, page)).await?.into_inner().into()) }
    };
    collect(MAX_UNPAGED_KEYS, fetch, |_| true).await
}

#[cfg(test)]
mod tests {
    use super::{Page, PageRequest, collect};

    /// A list of 0..total served in pages of at most `size`, the token being the next item.
    fn serve(total: u32, size: usize, asked: &mut Vec<(String, usize)>, next: PageRequest) -> Page<u32> {
        asked.push((next.page_token.clone(), next.wanted));
        let from: u32 = next.page_token.parse().unwrap_or(0);
        let items: Vec<u32> = (from..total).take(size).collect();
        let after = from + u32::try_from(items.len()).unwrap();
        Page { items, next_page_token: if after < total { after.to_string() } else { String::new() } }
    }

    #[tokio::test]
    async fn stops_at_the_limit_or_the_end() {
        let mut asked = Vec::new();
        let fetch = |next| std::future::ready(Ok(serve(10, 4, &mut asked, next)));
        assert_eq!(collect(6, fetch, |_| true).await.unwrap(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(asked, [(String::new(), 6), ("4".to_owned(), 2)]);

        let fetch = |next| std::future::ready(Ok(serve(10, 4, &mut Vec::new(), next)));
        assert_eq!(collect(100, fetch, |_| true).await.unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn keeps_only_what_is_asked_across_pages() {
        let fetch = |next| std::future::ready(Ok(serve(10, 3, &mut Vec::new(), next)));
        let mut started = false;
        let from_five = |item: &u32| {
            started = started || *item == 5;
            started
        };
        assert_eq!(collect(3, fetch, from_five).await.unwrap(), [5, 6, 7]);
    }
}
