{"format":"skillgate-signatures-v1","signatures":[{"key_id":"32F1B1F6F5C6BFCA","signature":"pSGobKkK216Ilfr1sqf0JddFNsvsX7Modr+XcT7w7gsfnYrsJIbKBjn8LZoVNiiHM/b53uvzQXhy//IgFe6FBA=="}]}
