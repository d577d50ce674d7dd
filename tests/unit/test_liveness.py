from __future__ import annotations

from portico.health.liveness import FLAP_WINDOW, HOLD_DOWN, MAX_HOLD_DOWN, PeerLiveness


def test_a_dead_node_is_out_at_once_and_back_after_the_hold_down() -> None:
    peer = PeerLiveness()
    assert peer.in_rotation(0)
    peer.observe(False, 10)
    assert not peer.in_rotation(10)
    peer.observe(True, 12)
    assert not peer.in_rotation(12) and peer.next_change(12) == 12 + HOLD_DOWN
    assert peer.in_rotation(12 + HOLD_DOWN) and peer.next_change(12 + HOLD_DOWN) is None


def test_a_flapping_node_waits_longer_each_time_and_is_forgiven_after_the_window() -> None:
    peer = PeerLiveness()
    holds = []
    now = 0.0
    for _ in range(8):
        peer.observe(False, now)
        peer.observe(True, now + 0.1)
        holds.append(peer.hold_down())
        now += 1
    assert holds == [min(HOLD_DOWN * 2 ** i, MAX_HOLD_DOWN) for i in range(8)]
    later = now + FLAP_WINDOW
    peer.observe(False, later)
    peer.observe(True, later + 0.1)
    assert peer.hold_down() == HOLD_DOWN  # the old deaths are out of the window
