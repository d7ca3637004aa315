/**
 * The `grpc-status-details-bin` trailer of a rate-limited call: a `google.rpc.Status` with the
 * code, the public message and one `google.rpc.RetryInfo` detail, so that clients which read
 * rich errors (Google's client libraries, grpc-gateway) know when to retry. Encoded here by
 * hand, a few bytes of protobuf, rather than with a protobuf runtime and the googleapis protos.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { retryInfoStatusDetails } from '@fluxguard/core/adapter';
 * trailers.set('grpc-status-details-bin', retryInfoStatusDetails(8, 'Too many requests.', 30));
 * ```
 */
export function retryInfoStatusDetails(grpcStatus: number, message: string, retryAfterSeconds: number): Buffer {
  const duration = field(1, varint(Math.max(0, Math.ceil(retryAfterSeconds))), 0);
  const retryInfo = field(1, duration, 2);
  const any = Buffer.concat([
    field(1, Buffer.from('type.googleapis.com/google.rpc.RetryInfo'), 2),
    field(2, retryInfo, 2),
  ]);
  return Buffer.concat([field(1, varint(grpcStatus), 0), field(2, Buffer.from(message, 'utf8'), 2), field(3, any, 2)]);
}

/** One protobuf field: wire type 0 (the value is a varint already) or 2 (length-delimited). */
function field(number: number, value: Buffer, wireType: 0 | 2): Buffer {
  const tag = varint((number << 3) | wireType);
  return wireType === 0 ? Buffer.concat([tag, value]) : Buffer.concat([tag, varint(value.length), value]);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  let rest = n;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}
