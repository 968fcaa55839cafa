"""A real WebSocket client (websocket-client from PyPI) that sends a streaming session what a
hostile or broken client might, on one Kubernetes subprotocol, then checks the session still
works, then breaks it with a message past the shim's limit.

Usage: ws_hostile.py URL SUBPROTOCOL
The URL is an exec of `cat` with stdin. Prints one JSON object:
  protocol: the subprotocol the server chose;
  echoed: what came back on stdout after the garbage, for a real stdin message;
  close_code: the status of the server's Close frame after the oversized message (or null);
  error: what ended the connection otherwise.
"""

import base64
import json
import socket
import sys
import threading

import websocket

url, protocol = sys.argv[1], sys.argv[2]
text = "base64" in protocol
ws = websocket.create_connection(
    url.replace("http://", "ws://"), subprotocols=[protocol], timeout=30
)
result = {"protocol": ws.getsubprotocol(), "echoed": "", "close_code": None, "error": None}


def channel(number, data):
    """A well-formed message on a channel, in the subprotocol's encoding."""
    if text:
        ws.send(chr(ord("0") + number) + base64.b64encode(data).decode())
    else:
        ws.send_binary(bytes([number]) + data)


# Malformed or meaningless for the session, each of which must be ignored.
ws.send("\u00e9AAAA")  # a first character of two bytes
ws.send("\u20acAAAA")  # of three
ws.send("")  # empty text
ws.send_binary(b"")  # empty binary
ws.send_binary(bytes([9]) + b"unknown channel")
ws.send("9" + base64.b64encode(b"unknown channel").decode())
ws.send("0!!!not base64!!!")
ws.send("/" + base64.b64encode(b"below channel 0").decode())
channel(4, b"not json at all")
channel(4, b'{"Width": "wide", "Height": -1}')
channel(4, b"{" * 5000)

# The session still works: stdin reaches `cat`, its output comes back.
channel(0, b"still-here\n")
while "still-here\n" not in result["echoed"]:
    opcode, data = ws.recv_data()
    if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY) and data:
        if text:
            number, payload = data[0] - ord("0"), base64.b64decode(data[1:])
        else:
            number, payload = data[0], data[1:]
        if number == 1:
            result["echoed"] += payload.decode()
    elif opcode == websocket.ABNF.OPCODE_CLOSE:
        result["error"] = "closed before echoing"
        break

# A message of 16 MiB: past the shim's 1 MiB, so it ends the session with a Close frame
# saying why. Sent from a thread: the server stops reading it part way.
def oversized():
    try:
        ws.send_binary(b"\0" * (16 * 1024 * 1024))
    except (OSError, websocket.WebSocketException):
        pass


sender = threading.Thread(target=oversized)
sender.start()
try:
    while True:
        # Frames as they come: recv_data would answer the Close itself, on a socket the
        # server may already have reset.
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(frame.data) >= 2:
                result["close_code"] = int.from_bytes(frame.data[:2], "big")
            break
except (OSError, websocket.WebSocketException) as e:
    result["error"] = f"{type(e).__name__}: {e}"
sender.join(timeout=30)
try:
    ws.sock.shutdown(socket.SHUT_RDWR)
except OSError:
    pass
ws.close()
print(json.dumps(result))
