"""Model definitions: Hiera patch encoder, Token Turing Machine, and the composed model."""
