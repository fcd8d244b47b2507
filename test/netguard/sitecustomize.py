"""Network guard for tests: imported at start-up by every Python process that has this
folder on PYTHONPATH (children inherit it), it fails any socket connection, datagram or
name lookup that leaves the loopback interface, and records it in $MR_MLLM_NETGUARD_LOG.

Python-level only (sys.addaudithook): ultralytics, huggingface_hub, urllib, requests...
DDS traffic is C++ (Fast DDS) and is kept on loopback by ROS_AUTOMATIC_DISCOVERY_RANGE and
the shipped profile (checked with tcpdump, see config/fastdds_large_images.xml).
"""

import ipaddress
import os
import socket
import sys

_LOG = os.environ.get('MR_MLLM_NETGUARD_LOG')
_LOCAL_NAMES = {'localhost', 'localhost.localdomain', 'ip6-localhost', ''}


def _local(host) -> bool:
    if host is None:
        return True  # bind to any / passive lookups
    if isinstance(host, bytes):
        host = host.decode(errors='replace')
    host = str(host).strip('[]').split('%')[0]
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name that would need DNS
    return ip.is_loopback or ip.is_unspecified


def _refuse(event: str, target) -> None:
    line = f'{os.getpid()} {sys.argv[:3]} {event} {target!r}\n'
    if _LOG:
        with open(_LOG, 'a') as f:
            f.write(line)
    raise PermissionError(f'network access outside loopback refused by netguard: '
                          f'{event} {target!r}')


def _hook(event: str, args) -> None:
    if event in ('socket.connect', 'socket.sendto', 'socket.sendmsg'):
        sock, address = args[0], args[-1]
        if getattr(sock, 'family', None) == socket.AF_UNIX or not isinstance(address, tuple):
            return
        if not _local(address[0]):
            _refuse(event, address)
    elif event in ('socket.getaddrinfo', 'socket.gethostbyname', 'socket.gethostbyname_ex',
                   'socket.gethostbyaddr', 'socket.getnameinfo'):
        host = args[0]
        if isinstance(host, tuple):  # getnameinfo((host, port), flags)
            host = host[0]
        if not _local(host):
            _refuse(event, host)


sys.addaudithook(_hook)
