//! Tests of the admission queue: order, aging, fairness, timeouts, limits and shedding.

use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn w(id: u64, priority: Priority, tenant: u32, arrived: u64) -> Waiting {
    Waiting {
        id,
        priority,
        tenant: TenantId(tenant),
        input_tokens: 100,
        output_tokens: 10,
        arrived: s(arrived),
    }
}

fn queue(settings: QueueSettings) -> AdmissionQueue {
    AdmissionQueue::new(settings, &[])
}

#[test]
fn the_most_urgent_goes_first_then_arrival_order() {
    let mut q = queue(QueueSettings::default());
    q.push(w(1, Priority::Batch, 0, 0)).unwrap();
    q.push(w(2, Priority::Normal, 0, 1)).unwrap();
    q.push(w(3, Priority::Critical, 0, 2)).unwrap();
    q.push(w(4, Priority::Normal, 0, 3)).unwrap();
    let order: Vec<u64> = std::iter::from_fn(|| q.pop(s(4)).map(|w| w.id)).collect();
    assert_eq!(order, [3, 2, 4, 1]);
    assert!(q.is_empty());
}

#[test]
fn aging_lifts_a_long_waiting_batch_request() {
    let mut q = queue(QueueSettings {
        aging: s(10),
        ..QueueSettings::default()
    });
    q.push(w(1, Priority::Batch, 0, 0)).unwrap();
    q.push(w(2, Priority::High, 0, 25)).unwrap();
    // At 30 s the batch request has waited 30 s: three levels up, to High, and older.
    assert_eq!(q.pop(s(30)).map(|w| w.id), Some(1));
    // Without aging the high one would have gone first.
    let mut q = queue(QueueSettings {
        aging: Duration::ZERO,
        ..QueueSettings::default()
    });
    q.push(w(1, Priority::Batch, 0, 0)).unwrap();
    q.push(w(2, Priority::High, 0, 25)).unwrap();
    assert_eq!(q.pop(s(30)).map(|w| w.id), Some(2));
}

#[test]
fn aging_never_lifts_a_request_over_a_critical_one() {
    let mut q = queue(QueueSettings {
        aging: s(10),
        ..QueueSettings::default()
    });
    // Waited 100 s: ten levels' worth, but it stops at High.
    q.push(w(1, Priority::Batch, 0, 0)).unwrap();
    q.push(w(2, Priority::Critical, 0, 99)).unwrap();
    q.push(w(3, Priority::High, 0, 99)).unwrap();
    let order: Vec<u64> = std::iter::from_fn(|| q.pop(s(100)).map(|w| w.id)).collect();
    // The critical request first though it came last; then the aged batch one, older than the
    // high one at the same level.
    assert_eq!(order, [2, 1, 3]);
}

#[test]
fn tenants_share_a_level_by_tokens() {
    let mut q = queue(QueueSettings::default());
    // Tenant 0 queued ten requests before tenant 1's two arrived.
    for i in 0..10 {
        q.push(w(i, Priority::Normal, 0, 0)).unwrap();
    }
    q.push(w(100, Priority::Normal, 1, 1)).unwrap();
    q.push(w(101, Priority::Normal, 1, 1)).unwrap();
    let first: Vec<u32> = (0..4).map(|_| q.pop(s(2)).unwrap().tenant.0).collect();
    assert_eq!(
        first,
        [0, 1, 0, 1],
        "alternating, not ten of tenant 0 first"
    );
}

#[test]
fn each_level_times_out_on_its_own_clock() {
    let mut settings = QueueSettings::default();
    settings.levels[Priority::Critical.index()].timeout = s(5);
    settings.levels[Priority::Batch.index()].timeout = s(50);
    let mut q = queue(settings);
    q.push(w(1, Priority::Critical, 0, 0)).unwrap();
    q.push(w(2, Priority::Batch, 0, 0)).unwrap();
    assert_eq!(q.next_deadline(), Some(s(5)));
    assert!(q.expire(s(4)).is_empty());
    let gone: Vec<u64> = q.expire(s(5)).iter().map(|w| w.id).collect();
    assert_eq!(gone, [1]);
    assert_eq!(q.next_deadline(), Some(s(50)));
    assert_eq!(q.len(), 1);
}

#[test]
fn a_full_level_refuses_and_a_full_queue_sheds_the_least_urgent() {
    let mut settings = QueueSettings::default();
    settings.levels[Priority::Low.index()].max_len = 1;
    settings.max_total = 3;
    let mut q = queue(settings);
    q.push(w(1, Priority::Low, 0, 0)).unwrap();
    assert_eq!(q.push(w(2, Priority::Low, 0, 0)), Err(Refused::Full));
    q.push(w(3, Priority::Batch, 0, 1)).unwrap();
    q.push(w(4, Priority::Batch, 0, 2)).unwrap();
    // Full: a normal request sheds the newest batch one.
    let e = q.push(w(5, Priority::Normal, 0, 3)).unwrap();
    assert_eq!(e.shed.map(|w| w.id), Some(4));
    // A batch request finds nothing less urgent to shed.
    assert_eq!(q.push(w(6, Priority::Batch, 0, 4)), Err(Refused::Full));
    assert_eq!(q.len(), 3);
    assert_eq!(q.remove(3).map(|w| w.id), Some(3));
    assert_eq!(q.remove(3), None);
    assert_eq!(q.len(), 2);
}

#[test]
fn removing_and_expiring_keep_the_counts_right() {
    let mut q = queue(QueueSettings::default());
    for i in 0..5 {
        q.push(w(i, Priority::ALL[i as usize], (i % 2) as u32, 0))
            .unwrap();
    }
    q.remove(2);
    let expired = q.expire(s(10_000));
    assert_eq!(expired.len(), 4);
    assert!(q.is_empty());
    assert_eq!(q.pop(s(10_000)), None);
    for p in Priority::ALL {
        assert_eq!(q.len_at(p), 0);
    }
}
