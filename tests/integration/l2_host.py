"""A node's layer-2 announcer alone, for `test_l2_responder`: run inside a network namespace.

  python -m tests.integration.l2_host VIP INTERFACE ADDRESS

It is the only node (no peers), its data path is ready, and it answers for VIP on INTERFACE until killed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys

from portico.announce.announcer import L2Announcer, L2Vip


async def main(vip_text: str, interface: str, address: str) -> None:
    vip = ipaddress.ip_address(vip_text)
    announcer = L2Announcer("node-a", lambda *event: print(*event, flush=True))
    announcer.set_keys((b"k" * 32,))
    announcer.set_node(ipaddress.ip_address(address), {})
    announcer.set_vips({vip: L2Vip(vip, ("t/web",), (interface,), None)}, data_path_ready=True)
    await announcer.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    asyncio.run(main(*sys.argv[1:4]))
