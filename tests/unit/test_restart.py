"""When a stopping agent is restarting (its DaemonSet replacing it), and when it is stopping for good."""

from portico.agent.restart import replaced


def test_a_newer_daemonset_template_is_a_restart() -> None:
    assert replaced(daemonset_generation=3, daemonset_deleting=False, pod_generation="2")


def test_the_same_template_a_deleted_daemonset_or_an_unknown_generation_is_a_stop_for_good() -> None:
    assert not replaced(3, False, "3")  # the node shutting down, an eviction: the template has not moved
    assert not replaced(4, True, "3")  # the DaemonSet is going away (uninstall)
    assert not replaced(None, False, "3")
    assert not replaced(3, False, None)  # not run by a DaemonSet: no label
    assert not replaced(3, False, "x")
