package naverapi

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"

	"github.com/pocketkms/kms"
)

// textItem is one plaintext or ciphertext of an encrypt, decrypt or
// re-encrypt call, with its context.
type textItem struct {
	text string // as sent: base64 plaintext or a ciphertext
	data []byte // the decoded plaintext (encrypt only); cleared after use
	ctx  []byte
}

func clearItems(items []textItem) {
	for i := range items {
		clear(items[i].data)
	}
}

// textOp describes one of the three string-in, string-out cipher calls, so
// that the v2 (string or array), v3 single and v3 batch handlers share
// everything but the envelope.
type textOp struct {
	in     string                    // JSON field name of the input
	check  func(it *textItem) string // format check; "" when good
	single func(out string) any      // the response to one input
	list   func(outs []string) any   // the API 2.0 response to an array
	item   func(out string) any      // a v3 batch result
	one    func(ctx context.Context, p kms.Cipher, tag string, it textItem) (string, error)
	many   func(ctx context.Context, p kms.Cipher, tag string, items []textItem) ([]string, error)
}

var opEncrypt = textOp{
	in: "plaintext", single: ciphertextOut, list: ciphertextsOut, item: ciphertextItem,
	check: func(it *textItem) string {
		var problem string
		it.data, problem = decodeLimited(it.text, maxPlaintextChars, kms.MaxAESPlaintext)
		return problem
	},
	one: func(ctx context.Context, p kms.Cipher, tag string, it textItem) (string, error) {
		return p.Encrypt(ctx, tag, it.data, it.ctx)
	},
	many: func(ctx context.Context, p kms.Cipher, tag string, items []textItem) ([]string, error) {
		in := make([]kms.EncryptItem, len(items))
		for i, it := range items {
			in[i] = kms.EncryptItem{Plaintext: it.data, Context: it.ctx}
		}
		return p.BatchEncrypt(ctx, tag, in)
	},
}

func checkCiphertext(it *textItem) string { return checkEnvelope(it.text) }

func ciphertextOut(s string) any    { return &CiphertextResponse{Ciphertext: s} }
func ciphertextsOut(s []string) any { return &CiphertextListResponse{Ciphertext: s} }
func ciphertextItem(s string) any   { return CiphertextResponse{Ciphertext: s} }
func plaintextOut(s string) any     { return &PlaintextResponse{Plaintext: s} }
func plaintextsOut(s []string) any  { return &PlaintextListResponse{Plaintext: s} }
func plaintextItem(s string) any    { return PlaintextResponse{Plaintext: s} }

func decryptItems(items []textItem) []kms.DecryptItem {
	in := make([]kms.DecryptItem, len(items))
	for i, it := range items {
		in[i] = kms.DecryptItem{Ciphertext: it.text, Context: it.ctx}
	}
	return in
}

// encodePlaintext base64-encodes a plaintext and clears it.
func encodePlaintext(pt []byte) string {
	s := base64.StdEncoding.EncodeToString(pt)
	clear(pt)
	return s
}

var opDecrypt = textOp{
	in: "ciphertext", check: checkCiphertext, single: plaintextOut, list: plaintextsOut, item: plaintextItem,
	one: func(ctx context.Context, p kms.Cipher, tag string, it textItem) (string, error) {
		pt, err := p.Decrypt(ctx, tag, it.text, it.ctx)
		if err != nil {
			return "", err
		}
		return encodePlaintext(pt), nil
	},
	many: func(ctx context.Context, p kms.Cipher, tag string, items []textItem) ([]string, error) {
		pts, err := p.BatchDecrypt(ctx, tag, decryptItems(items))
		if err != nil {
			return nil, err
		}
		out := make([]string, len(pts))
		for i, pt := range pts {
			out[i] = encodePlaintext(pt)
		}
		return out, nil
	},
}

var opReEncrypt = textOp{
	in: "ciphertext", check: checkCiphertext, single: ciphertextOut, list: ciphertextsOut, item: ciphertextItem,
	one: func(ctx context.Context, p kms.Cipher, tag string, it textItem) (string, error) {
		return p.ReEncrypt(ctx, tag, it.text, it.ctx)
	},
	many: func(ctx context.Context, p kms.Cipher, tag string, items []textItem) ([]string, error) {
		return p.BatchReEncrypt(ctx, tag, decryptItems(items))
	},
}

// textHandler serves encrypt, decrypt and re-encrypt. On v2 the input may be
// a string or an array of 1..100 strings (one context for all), answered in
// the same shape; an array runs as one atomic batch. On v3 it is a string.
func textHandler(op textOp) handler {
	return func(c *call) (any, error) {
		o, err := c.body()
		if err != nil {
			return nil, err
		}
		o.require(op.in)
		var vals []string
		isList := false
		if c.api == v2 {
			vals, isList, _ = o.strOrList(op.in)
		} else if s, ok := o.str(op.in); ok {
			vals = []string{s}
		}
		encCtx := o.context("context")
		if err := o.err(); err != nil {
			return nil, err
		}
		items := make([]textItem, len(vals))
		defer clearItems(items)
		for i, v := range vals {
			items[i] = textItem{text: v, ctx: encCtx}
			if problem := op.check(&items[i]); problem != "" {
				name := op.in
				if isList {
					name += "[" + strconv.Itoa(i) + "]"
				}
				o.failAt(name, problem)
			}
		}
		if err := o.err(); err != nil {
			return nil, err
		}
		if !isList {
			out, err := op.one(c.ctx, c.plane(), c.tag, items[0])
			if err != nil {
				return nil, err
			}
			return op.single(out), nil
		}
		outs, err := op.many(c.ctx, c.plane(), c.tag, items)
		if err != nil {
			return nil, err
		}
		return op.list(outs), nil
	}
}

// batchHandler serves the v3 batch calls: {"requests":[{in, context}, …]}
// with 1..100 items, answered {"results":{"<index>":{out}}}. A wrong JSON
// type anywhere fails the whole body ({"error"} with FieldErrors); missing or
// malformed items fail as {"failures"} by index (phase 1) before anything
// runs; the Engine's own item failures come back the same way.
func batchHandler(op textOp) handler {
	return func(c *call) (any, error) {
		o, err := c.body()
		if err != nil {
			return nil, err
		}
		o.require("requests")
		raws, ok := o.list("requests")
		if ok && (len(raws) == 0 || len(raws) > maxArrayItems) {
			o.fail("requests", "must hold 1.."+strconv.Itoa(maxArrayItems)+" items")
		}
		items := make([]textItem, len(raws))
		defer clearItems(items)
		present := make([]bool, len(raws))
		for i, raw := range raws {
			item, ok := o.sub(raw, "requests["+strconv.Itoa(i)+"]")
			if !ok {
				continue
			}
			items[i].text, present[i] = item.str(op.in)
			items[i].ctx = item.context("context")
		}
		if err := o.err(); err != nil {
			return nil, err
		}
		problems := map[int][]FieldError{}
		for i := range items {
			name := "requests[" + strconv.Itoa(i) + "]." + op.in
			switch {
			case !present[i]:
				problems[i] = []FieldError{{Field: name, Message: "is required"}}
			default:
				if problem := op.check(&items[i]); problem != "" {
					problems[i] = []FieldError{{Field: name, Message: problem}}
				}
			}
		}
		if len(problems) > 0 {
			return nil, batchFailures(problems)
		}
		outs, err := op.many(c.ctx, c.plane(), c.tag, items)
		if err != nil {
			return nil, err
		}
		results := make(map[string]any, len(outs))
		for i, s := range outs {
			results[strconv.Itoa(i)] = op.item(s)
		}
		return &BatchResponse[any]{Results: results}, nil
	}
}

// customKey serves Create Custom Key (v2) and issue-custom-key (v3).
// An empty body asks for a 256-bit key, ciphertext only. The key version is
// "key_version" on v2 (as NAVER documents it) and "keyVersion" on v3.
func customKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	bits, hasBits := o.integer("bits", 0, 1<<20)
	if hasBits && bits != 128 && bits != 256 && bits != 512 {
		o.fail("bits", "must be 128, 256 or 512")
	}
	plain, _ := o.boolean("requestPlainKey")
	encCtx := o.context("context")
	if err := o.err(); err != nil {
		return nil, err
	}
	ck, err := c.plane().CreateCustomKey(c.ctx, c.tag, kms.CustomKeyRequest{Bits: bits, RequestPlainKey: plain, Context: encCtx})
	if err != nil {
		return nil, err
	}
	var pt string
	if plain {
		pt = encodePlaintext(ck.Plaintext)
	}
	if c.api == v2 {
		return &V2CustomKeyResponse{Ciphertext: ck.Ciphertext, KeyVersion: ck.KeyVersion, Plaintext: pt}, nil
	}
	return &CustomKeyResponse{Ciphertext: ck.Ciphertext, KeyVersion: ck.KeyVersion, Plaintext: pt}, nil
}

// signData reads the data member of sign and verify: base64 of the message,
// at most 10,924 characters and 8,192 bytes.
func signData(o object) []byte {
	o.require("data")
	s, ok := o.str("data")
	if !ok {
		return nil
	}
	data, problem := decodeLimited(s, maxSignDataChars, kms.MaxSignData)
	if problem != "" {
		o.fail("data", problem)
	}
	return data
}

// sign serves Sign: {"data"} → {"signature"}.
func sign(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	data := signData(o)
	if err := o.err(); err != nil {
		return nil, err
	}
	sig, err := c.plane().Sign(c.ctx, c.tag, data)
	if err != nil {
		return nil, err
	}
	return &SignResponse{Signature: sig}, nil
}

// verify serves Verify: {"data","signature"} → {"valid"}. A signature that
// does not match answers valid:false, not an error.
func verify(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	data := signData(o)
	o.require("signature")
	sig, ok := o.str("signature")
	if ok {
		if problem := checkEnvelope(sig); problem != "" {
			o.fail("signature", problem)
		}
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	valid, err := c.plane().Verify(c.ctx, c.tag, data, sig)
	if err != nil {
		return nil, err
	}
	return &VerifyResponse{Valid: valid}, nil
}

// v2PublicKey serves get-pub-key: {"keyVersion"} (1..100, default the
// current version) → {"publicKey": PEM}.
func v2PublicKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	v, _ := o.integer("keyVersion", 1, kms.MaxVersions)
	if err := o.err(); err != nil {
		return nil, err
	}
	pem, err := c.plane().GetPublicKey(c.ctx, c.tag, uint32(v))
	if err != nil {
		return nil, err
	}
	return &V2PublicKeyResponse{PublicKey: pem}, nil
}

// v3PublicKey serves GET …/versions/{version}/public-key →
// {"keyTag","version","publicKey"}.
func v3PublicKey(c *call) (any, error) {
	v, err := c.version(math.MaxInt32)
	if err != nil {
		return nil, err
	}
	pem, err := c.plane().GetPublicKey(c.ctx, c.tag, v)
	if err != nil {
		return nil, err
	}
	return &PublicKeyResponse{KeyTag: c.keyTag(), PublicKey: pem, Version: v}, nil
}

// version parses the {version} path value: decimal digits, 1..max.
func (c *call) version(max int) (uint32, error) {
	n, ok := parseDecimal(c.r.PathValue("version"), 1, max)
	if !ok {
		return 0, &apiError{status: http.StatusBadRequest, code: codeInvalidParameter,
			fields: []FieldError{{Field: "version", Message: "must be an integer from 1 to " + strconv.Itoa(max)}}}
	}
	return uint32(n), nil
}
