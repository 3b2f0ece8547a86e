"""What a call cost: usage read from the providers' own answers (buffered or streamed), prices,
and a request's worst case. Pure: no mitmproxy; addon/budget/ wires it to flows."""
