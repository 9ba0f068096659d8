//! The shared rate-limit bucket statement (`Store::lease`) driven directly on simulated
//! time: replicas lease slices, spend them within their lease window, give them back
//! and die, and no stretch of admissions exceeds `burst + limit × T / period`.

use keyward_core::rate::Shape;
use keyward_store::{Lease, Slice, Store};

use crate::helpers::{Backend, both, spawn};

/// 10 tokens per 2 s, burst 4: a token refills every 200 ms, an empty bucket is full
/// again after 800 ms, within one lease window of 1 s.
const LIMIT: i64 = 10;
const PERIOD_MS: i64 = 2_000;
const BURST: i64 = 4;
const WINDOW_MS: i64 = 1_000;
const SHAPE: Shape = Shape { limit: LIMIT, unit: PERIOD_MS, capacity: BURST * PERIOD_MS };

async fn lease(store: &Store, now_ms: i64, window: i64, want: i64, slice: Option<Slice>) -> i64 {
    let lease = Lease { subject: "sim", name: "api", shape: SHAPE, now_ms, window, want, slice };
    store.lease(&lease).await.expect("lease").tokens
}

/// Every stretch of `admitted` (one instant per token, in order) within the bound.
fn assert_within_bound(admitted: &[i64]) {
    for (i, start) in admitted.iter().enumerate() {
        for (count, end) in admitted[i..].iter().enumerate() {
            // Admissions i..=i+count happened within [start, end].
            let allowed = BURST * PERIOD_MS + LIMIT * (end - start);
            assert!(
                i64::try_from(count + 1).unwrap() * PERIOD_MS <= allowed,
                "{} admitted in {} ms, more than the bound: {admitted:?}",
                count + 1,
                end - start
            );
        }
    }
}

both!(a_lagging_replicas_slice_counts_against_the_bucket_after_the_window_moves_on);
/// A replica whose clock lags by 0.9 of a window leases the whole burst late in its
/// window and spends it just before that window ends for it, while another replica is
/// already a window further: the bucket must keep counting the lagging slice as out
/// (its window is the row's previous one), or it refills past the burst meanwhile.
async fn a_lagging_replicas_slice_counts_against_the_bucket_after_the_window_moves_on(backend: Backend) {
    let app = spawn(backend).await;
    let store = &app.running().store;
    let lag_window = |now: i64| (now - 900) / WINDOW_MS;
    let mut admitted = Vec::new();

    let lagging = lease(store, 999_950, lag_window(999_950), BURST, None).await;
    assert_eq!(lagging, BURST, "a full bucket grants the whole burst");
    // The other replica moves the row on to window 1000, then asks again once the
    // bucket would have refilled but for the lagging slice still out.
    assert_eq!(lease(store, 1_000_000, 1_000, 1, None).await, 0, "the burst is out");
    let granted = lease(store, 1_000_850, 1_000, BURST, Some(Slice { window: 1_000, leased: 0, unused: 0 })).await;
    admitted.extend(std::iter::repeat_n(1_000_850, usize::try_from(granted).unwrap()));
    // The lagging replica spends its slice while its window 999 lasts for it.
    assert_eq!(lag_window(1_000_880), 999);
    admitted.extend(std::iter::repeat_n(1_000_880, usize::try_from(lagging).unwrap()));
    admitted.sort_unstable();
    assert_within_bound(&admitted);

    // Two windows on, the lagging lease is forgotten and the bucket admits its burst.
    assert_eq!(lease(store, 1_002_850, 1_002, BURST, None).await, BURST, "the burst after two windows");
    app.stop().await;
}

both!(a_slice_given_back_in_the_next_window_returns_its_unused_tokens);
/// A slice leased in one window and given back after the row moved to the next returns
/// what it did not use, at once: another replica is granted exactly that.
async fn a_slice_given_back_in_the_next_window_returns_its_unused_tokens(backend: Backend) {
    let app = spawn(backend).await;
    let store = &app.running().store;
    assert_eq!(lease(store, 999_950, 999, BURST, None).await, BURST);
    assert_eq!(lease(store, 1_000_000, 1_000, 1, None).await, 0, "the burst is out");
    // One token spent, three given back, from the previous window.
    let spent = Slice { window: 999, leased: BURST, unused: BURST - 1 };
    assert_eq!(lease(store, 1_000_010, 999, 0, Some(spent)).await, 0, "giving back grants nothing");
    // 10 ms of refill is a twentieth of a token: what comes back is the returned three.
    assert_eq!(lease(store, 1_000_020, 1_000, BURST, None).await, BURST - 1, "the unused tokens came back");
    app.stop().await;
}

both!(no_schedule_of_leases_returns_and_crashes_admits_past_the_bound);
/// The bucket statement under a long random schedule of simulated replicas leasing,
/// spending, giving back and dying on simulated time, whose lease windows lag by up to
/// 0.9 of a window (as a stall between reading the clock and spending would make them):
/// every stretch of admissions stays within `burst + limit × T / period`.
async fn no_schedule_of_leases_returns_and_crashes_admits_past_the_bound(backend: Backend) {
    let app = spawn(backend).await;
    let store = &app.running().store;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |below: i64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        i64::try_from(seed % u64::try_from(below).unwrap()).unwrap()
    };
    const LAGS_MS: [i64; 3] = [0, 350, 900];
    let mut slices: [Option<Slice>; 3] = [None; 3];
    let mut admitted = Vec::new();
    let mut now = 1_000_000_i64;
    for _ in 0..1_500 {
        // Storms of requests between quiet spells, so slices sit while the bucket refills.
        now += if random(10) < 7 { random(4) } else { 100 + random(600) };
        let replica = usize::try_from(random(3)).unwrap();
        let window = (now - LAGS_MS[replica]) / WINDOW_MS;
        if random(50) == 0 {
            // A crash: the slice is stranded.
            slices[replica] = None;
            continue;
        }
        match slices[replica] {
            Some(ref mut slice) if slice.window == window && slice.unused > 0 => {
                slice.unused -= 1;
                admitted.push(now);
            }
            current => {
                let want = 1 + random(3);
                let granted = lease(store, now, window, want, current).await;
                slices[replica] = Some(Slice { window, leased: granted, unused: granted });
                if granted > 0 {
                    slices[replica].as_mut().unwrap().unused -= 1;
                    admitted.push(now);
                }
            }
        }
    }
    assert!(admitted.len() > 100, "the schedule admitted too little to test anything: {}", admitted.len());
    assert_within_bound(&admitted);
    app.stop().await;
}
