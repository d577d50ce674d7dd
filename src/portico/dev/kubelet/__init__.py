"""The lab kubelet: plays every lab node's kubelet (and the scheduler) from one process."""
