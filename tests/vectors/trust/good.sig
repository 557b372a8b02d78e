{"format":"skillgate-signatures-v1","signatures":[{"key_id":"32F1B1F6F5C6BFCA","signature":"tlOyN7w+GLFyu6/VUuG1YHj6/eUlTOyI/R9cdRdVcOGMVoGWueU0kRLragskzq04JYWPzIvfVUxwMywNoTt/Bg=="}]}
