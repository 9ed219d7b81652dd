//! The gRPC codec of the generated clients and servers: prost's, except that agents' result
//! batches are decoded into pooled results (see [`crate::pool`]).

use std::any::Any;
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::pool;
use crate::v1::{AgentMessage, ResultBatch};

/// `tonic_prost::ProstCodec` with [`PooledDecoder`] for decoding.
#[derive(Debug, Clone)]
pub struct VigilCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for VigilCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for VigilCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = PooledDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PooledDecoder(PhantomData)
    }
}

/// Decodes `AgentMessage`s and `ResultBatch`es into pooled results, every other message with
/// prost; errors are prost's, as `INTERNAL` (what `ProstCodec` answers).
#[derive(Debug, Clone)]
pub struct PooledDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for PooledDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let internal = |e: prost::DecodeError| Status::internal(e.to_string());
        let len = buf.remaining();
        // tonic hands over one whole message in one contiguous buffer.
        let bytes = buf.chunk();
        let mut decoded: Option<U> = None;
        if bytes.len() == len {
            let slot: &mut dyn Any = &mut decoded;
            if let Some(agent) = slot.downcast_mut::<Option<AgentMessage>>() {
                *agent = Some(pool::decode_agent_message(bytes).map_err(internal)?);
            } else if let Some(batch) = slot.downcast_mut::<Option<ResultBatch>>() {
                *batch = Some(pool::decode_result_batch(bytes).map_err(internal)?);
            }
        }
        match decoded {
            Some(message) => {
                buf.advance(len);
                Ok(Some(message))
            }
            None => U::decode(buf).map(Some).map_err(internal),
        }
    }
}
