{"format":"skillgate-signatures-v1","signatures":[{"key_id":"32F1B1F6F5C6BFCA","signature":"dcFiw7pRcANQyllXHx7AwxlKMRsDu0rF32H59s7FXSMgCnDTfHfqEMRsa3K9LNoJ+vmwZe75f9zJv1E/AaESAA=="}]}
