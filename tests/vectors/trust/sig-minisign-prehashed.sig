{"format":"skillgate-signatures-v1","signatures":[{"key_id":"32F1B1F6F5C6BFCA","signature":"IJ60F9Pio0JxuLnWpDuQsR1zS2SbyfhhX1qcxYUK205T3DkEZRhkU3XyHYgxcWnr8U+XTG7TQpfkRSwHNVn3BA=="}]}
