{
  "format": "skillgate-signatures-v1",
  "signatures": [
    {
      "key_id": "5AE861484170534F",
      "signature": "lPwhyrdGP8eN2EvLiiKV4qTYkEuKnjJfFxepm4Q4FJh4nWJrpgK/M9KZlThZAowTxZUcmTlfjeqAhFoEYPs3BA=="
    }
  ]
}
