//! The client after it is bound: renewing, rebinding, expiry, link changes and release.

use super::*;

#[test]
fn renews_at_t1_by_unicast_to_the_server() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let t1 = t0 + secs(43200);
    assert!(client.handle_timeout(t1 - secs(1)).is_empty());
    let (request, transmit) = only_send(&client.handle_timeout(t1));
    assert_eq!(client.state(), StateKind::Renewing);
    assert_eq!(
        (transmit.source, transmit.destination),
        (QEMU_ADDRESS, Destination::Unicast(QEMU_SERVER))
    );
    assert_eq!(request.ciaddr, QEMU_ADDRESS);
    assert_eq!(
        (request.options.requested_ip, request.options.server_id),
        (None, None),
        "RFC 2131 table 5"
    );

    let renewed_at = t1 + secs(1);
    let actions = client
        .handle_packet(&replay("slirp_ack", &client), renewed_at)
        .unwrap();
    let [Event::LeaseRenewed(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        lease.acquired_at, t1,
        "the lease runs from when the REQUEST went out"
    );
    assert_eq!(client.state(), StateKind::Bound);
    assert_eq!(client.next_deadline(), Some(t1 + secs(43200)));
}

#[test]
fn nak_in_renewing_loses_the_lease_and_starts_over() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let t1 = t0 + secs(43200);
    client.handle_timeout(t1);
    let actions = client
        .handle_packet(&replay("slirp_nak", &client), t1)
        .unwrap();
    let [
        Event::LeaseLost {
            lease,
            reason: LossReason::Nak,
        },
    ] = events(&actions)[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(lease.address, QEMU_ADDRESS);
    assert_eq!((client.state(), client.lease()), (StateKind::Init, None));
    let (discover, _) = only_send(&client.handle_timeout(t1 + client.config.nak_delay));
    assert_eq!(discover.message_type, MessageType::Discover);
}

#[test]
fn unanswered_renewal_backs_off_by_half_the_time_left_then_rebinds_at_t2_by_broadcast() {
    let t0 = Instant::now();
    let mut client = bound_short(t0);
    client.handle_timeout(t0 + secs(500));
    let t2 = t0 + secs(875);
    let mut retries = Vec::new();
    while client.state() == StateKind::Renewing {
        let deadline = client.next_deadline().unwrap();
        retries.push((deadline - t0).as_millis());
        client.handle_timeout(deadline);
    }
    // 500 + 375/2, then halving, then the 60 s floor, cut off at T2.
    assert_eq!(retries, [687_500, 781_250, 841_250, 875_000]);
    assert_eq!(client.state(), StateKind::Rebinding);

    let mut client = bound_short(t0);
    client.handle_timeout(t0 + secs(500));
    let mut renewal_xid = None;
    let mut last = Vec::new();
    while client.state() == StateKind::Renewing {
        renewal_xid.get_or_insert(client.state.exchange().unwrap().xid);
        last = client.handle_timeout(client.next_deadline().unwrap());
    }
    let (rebind, transmit) = only_send(&last);
    assert_eq!(
        (transmit.source, transmit.destination),
        (QEMU_ADDRESS, Destination::Broadcast)
    );
    assert_eq!(rebind.ciaddr, QEMU_ADDRESS);
    assert_ne!(Some(rebind.xid), renewal_xid);
    assert_eq!(
        client.next_deadline(),
        Some(t2 + Duration::from_millis(62_500)),
        "half of the 125 s left, above the 60 s floor"
    );

    // Another server answers: the lease is renewed, with its server id.
    let mut ack = reply(&client, MessageType::Ack, QEMU_ADDRESS, 1000);
    ack.options.server_id = Some(Ipv4Addr::new(10, 0, 2, 4));
    let actions = client.handle_packet(&ack.encode(), t2 + secs(1)).unwrap();
    let [Event::LeaseRenewed(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (lease.server_id, lease.acquired_at),
        (Ipv4Addr::new(10, 0, 2, 4), t2)
    );
}

#[test]
fn no_answer_until_expiry_loses_the_lease_and_rediscovers_at_once() {
    let t0 = Instant::now();
    let mut client = bound_short(t0);
    let mut actions = Vec::new();
    let mut wakeups = 0;
    while events(&actions).is_empty() {
        actions = client.handle_timeout(client.next_deadline().unwrap());
        wakeups += 1;
        assert!(wakeups < 20, "never expired");
    }
    let [
        Event::LeaseLost {
            lease,
            reason: LossReason::Expired,
        },
    ] = events(&actions)[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(lease.expires_at(), t0 + secs(1000));
    let (discover, transmit) = only_send(&actions);
    assert_eq!(
        (discover.message_type, transmit.source),
        (MessageType::Discover, Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(client.state(), StateKind::Selecting);
}

#[test]
fn a_late_wakeup_past_expiry_expires_rather_than_renews() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let actions = client.handle_timeout(t0 + secs(90000));
    assert!(matches!(
        events(&actions)[..],
        [Event::LeaseLost {
            reason: LossReason::Expired,
            ..
        }]
    ));
    assert_eq!(only_send(&actions).0.message_type, MessageType::Discover);
}

#[test]
fn link_down_keeps_the_lease_and_link_up_confirms_it_with_init_reboot() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let down = t0 + secs(100);
    assert!(client.link_changed(false, down).is_empty());
    assert_eq!(client.state(), StateKind::Stopped);
    assert_eq!(client.lease().map(|l| l.address), Some(QEMU_ADDRESS));
    assert_eq!(
        client.next_deadline(),
        Some(t0 + secs(86400)),
        "only expiry matters while down"
    );

    let up = t0 + secs(200);
    let (request, transmit) = only_send(&client.link_changed(true, up));
    assert_eq!(client.state(), StateKind::Rebooting);
    assert_eq!(request.message_type, MessageType::Request);
    assert_eq!(request.options.requested_ip, Some(QEMU_ADDRESS));
    assert_eq!(
        request.options.server_id, None,
        "INIT-REBOOT names no server"
    );
    assert_eq!(
        (request.ciaddr, transmit.destination),
        (Ipv4Addr::UNSPECIFIED, Destination::Broadcast)
    );
    let actions = client
        .handle_packet(&replay("slirp_ack", &client), up)
        .unwrap();
    assert!(
        matches!(events(&actions)[..], [Event::LeaseRenewed(lease)] if lease.acquired_at == up)
    );
    assert_eq!(client.state(), StateKind::Bound);
}

#[test]
fn an_unanswered_init_reboot_keeps_using_the_lease() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    client.link_changed(false, t0);
    client.link_changed(true, t0 + secs(10));
    let mut actions = Vec::new();
    while client.state() == StateKind::Rebooting {
        actions = client.handle_timeout(client.next_deadline().unwrap());
    }
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(client.state(), StateKind::Bound);
    assert_eq!(client.next_deadline(), Some(t0 + secs(43200)));
}

#[test]
fn a_lease_that_ends_while_the_link_is_down_is_lost_then_and_rediscovered_on_link_up() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    client.link_changed(false, t0 + secs(1));
    let actions = client.handle_timeout(t0 + secs(86400));
    assert!(matches!(
        events(&actions)[..],
        [Event::LeaseLost {
            reason: LossReason::Expired,
            ..
        }]
    ));
    assert!(sends(&actions).is_empty(), "the link is down");
    assert_eq!(client.next_deadline(), None);
    let (discover, _) = only_send(&client.link_changed(true, t0 + secs(90000)));
    assert_eq!(discover.message_type, MessageType::Discover);
}

#[test]
fn release_unicasts_a_release_and_loses_the_lease() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let actions = client.release();
    let (release, transmit) = only_send(&actions);
    assert_eq!(release.message_type, MessageType::Release);
    assert_eq!(
        (release.ciaddr, release.options.server_id),
        (QEMU_ADDRESS, Some(QEMU_SERVER))
    );
    assert_eq!(transmit.destination, Destination::Unicast(QEMU_SERVER));
    assert!(matches!(
        events(&actions)[..],
        [Event::LeaseLost {
            reason: LossReason::Released,
            ..
        }]
    ));
    assert_eq!(
        (client.state(), client.next_deadline()),
        (StateKind::Stopped, None)
    );
}

#[test]
fn replies_while_bound_are_not_waited_for() {
    let t0 = Instant::now();
    let mut client = bound(t0);
    let mut ack = fixture("slirp_ack");
    ack[4..8].copy_from_slice(&[0; 4]);
    assert_eq!(
        client.handle_packet(&ack, t0),
        Err(Rejected::NotWaiting(StateKind::Bound))
    );
}
